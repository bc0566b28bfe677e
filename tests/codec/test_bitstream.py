import numpy as np
import pytest

from tests.conftest import smooth_image
from wavar import WaveletCodec
from wavar.codec import CodedImage
from wavar.errors import FileFormatError


@pytest.fixture
def seq(rng):
    return WaveletCodec("cdf53", language="zerotree").encode(smooth_image(rng, 20, 12, 3))


def test_file_round_trip(seq, tmp_path):
    path = tmp_path / "x.wvr"
    seq.save(path)
    back = CodedImage.load(path)
    assert back.header == seq.header
    assert np.array_equal(back.tokens, seq.tokens)
    # odd length packs too
    odd = seq[: len(seq) - (1 - len(seq) % 2)]
    assert np.array_equal(CodedImage.from_bytes(odd.to_bytes()).tokens, odd.tokens)


def test_damaged_files_are_refused(seq):
    data = seq.to_bytes()
    with pytest.raises(FileFormatError, match="truncated"):
        CodedImage.from_bytes(data[:-7])
    flipped = bytearray(data)
    flipped[40] ^= 0x10
    with pytest.raises(FileFormatError, match="checksum"):
        CodedImage.from_bytes(bytes(flipped))
    with pytest.raises(FileFormatError, match="magic"):
        CodedImage.from_bytes(b"PNG" + data[3:])
    newer = bytearray(data)
    newer[4] = 99
    with pytest.raises(FileFormatError, match="version"):
        CodedImage.from_bytes(bytes(newer))
    with pytest.raises(FileFormatError, match="truncated"):
        CodedImage.from_bytes(data[:10])


def test_missing_file(tmp_path):
    with pytest.raises(FileFormatError, match="no such file"):
        CodedImage.load(tmp_path / "nope.wvr")
