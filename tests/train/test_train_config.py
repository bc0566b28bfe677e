"""TrainConfig from TOML and key=value overrides."""

from pathlib import Path

import pytest

from wavar.model.transformer import WaveletGPT
from wavar.train.config import ConfigError, TrainConfig, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


SIZES = {"mnist": (0.5e6, 1e6), "fashion-mnist": (0.5e6, 1e6), "mnist-large": (3e6, 4e6),
         "fashion-mnist-large": (3e6, 4e6), "fashion-mnist-raster": (0.5e6, 1e6),
         "mnist-medium": (5e6, 6e6), "fashion-mnist-medium": (8e6, 9e6),
         "fashion-mnist-raster-medium": (8e6, 9e6), "fashion-mnist-fine": (8e6, 9e6),
         "mnist-raster-medium": (5e6, 6e6), "mnist-fine": (5e6, 6e6),
         "cifar10-lossless": (4e6, 4.5e6), "cifar10-raster": (4e6, 4.5e6),
         "cifar10-lossless-large": (24e6, 26e6)}


@pytest.mark.parametrize("name", ["tiny-cpu", *SIZES])
def test_shipped_configs_load_and_build_their_model(name):
    cfg = load_config(CONFIGS / f"{name}.toml")
    assert cfg.betas == (0.9, 0.95)
    assert cfg.codec  # the codec parameters travel into the model config
    from wavar.codec import codec_from_params

    codec = codec_from_params(cfg.codec)  # the codec table names real codec parameters
    assert cfg.model_config().vocab_size == codec.lang.vocab_size
    n = WaveletGPT(cfg.model_config()).num_params()
    if name in SIZES:
        lo, hi = SIZES[name]
        assert lo < n < hi, n
    assert cfg.model_config().codec == cfg.codec


def test_raster_baseline_matches_the_wavelet_model_in_size():
    def params(name):
        cfg = load_config(CONFIGS / f"{name}.toml", ["model_args.n_channels=1"])
        return WaveletGPT(cfg.model_config()).num_params()

    assert params("fashion-mnist") == 722_240 and params("fashion-mnist-raster") == 696_544


def test_the_vocabulary_follows_the_codec():
    cfg = load_config(None, ['codec.language="raster"'])
    assert cfg.model_config().vocab_size == 256
    with pytest.raises(ConfigError, match="vocab_size"):
        load_config(None, ['codec.language="raster"', "model_args.vocab_size=7"]).model_config()


def test_overrides_are_typed_by_the_dataclass():
    cfg = load_config(CONFIGS / "tiny-cpu.toml", [
        "lr=3e-4", "max_steps=1e3", "compile=true", "dataset=123", "betas=0.8,0.99",
        "model_args.n_layer=3", "model_args.rope=false", "codec.wavelet=haar",
        "codec.final_exponent=-2", 'out_dir="runs/x y"'])
    assert cfg.lr == 3e-4 and cfg.max_steps == 1000 and isinstance(cfg.max_steps, int)
    assert cfg.compile is True and cfg.dataset == "123" and cfg.betas == (0.8, 0.99)
    assert cfg.model_args == {"class_dropout": 0.1, "n_layer": 3, "rope": False}
    assert cfg.codec["wavelet"] == "haar" and cfg.codec["final_exponent"] == -2
    assert cfg.codec["language"] == "zeroblock" and cfg.out_dir == "runs/x y"
    assert cfg.model_config().n_layer == 3


def test_defaults_without_a_file():
    assert load_config() == TrainConfig()


@pytest.mark.parametrize("override, message", [
    ("learning_rate=1e-3", "unknown config key 'learning_rate'"),
    ("model_args.n_layers=3", "unknown model_args key 'n_layers'"),
    ("lr.x=1", "lr is not a table"),
    ("lr=fast", "lr = 'fast' .* not a valid float"),
    ("max_steps=1.5", "not a valid int"),
    ("compile=1", "not a valid bool"),
    ("betas=0.9", "not a valid tuple"),
    ("model_args.n_layer=two", "model_args.n_layer = 'two'"),
    ("lr", "not of the form key=value"),
    ("batch_size=0", "batch_size must be >= 1"),
    ("pad_to=0", "pad_to must be >= 1"),
    ("ema_decay=1.0", "ema_decay must lie in"),
])
def test_bad_overrides_raise_a_clear_error(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_bad_file_keys_name_the_file(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('dataset = "mnist"\nlearningrate = 1e-3\n')
    with pytest.raises(ConfigError, match=r"'learningrate' \(.*bad.toml\)"):
        load_config(f)
    f.write_text("model_args = 3\n")
    with pytest.raises(ConfigError, match="must be a table"):
        load_config(f)
    f.write_text("lr = \n")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(f)


def test_a_bad_model_config_is_a_config_error():
    cfg = load_config(None, ["model_args.n_embd=30", "model_args.n_head=4"])
    with pytest.raises(ConfigError, match="multiple of n_head"):
        cfg.model_config()
    with pytest.raises(ConfigError, match="unknown model preset"):
        load_config(None, ["model=huge"]).model_config()
