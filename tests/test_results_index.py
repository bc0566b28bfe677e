"""The results are navigable: every file under benchmarks/results/ is named in its index
(benchmarks/results/README.md), and every results path that BENCHMARKS.md, README.md and
benchmarks/README.md name exists. Paths and text only, no imports beyond the standard library."""

import fnmatch
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
INDEX = RESULTS / "README.md"
DOCS = ("BENCHMARKS.md", "README.md", "benchmarks/README.md")
TOPICS = ("codec", "eval", "train", "sampling")

# `results/...` or `benchmarks/results/...`, brace groups included ({json,txt}); not a path
# inside a commit (`b65aade:benchmarks/results/<name>`) nor the tail of a longer path
PATH = re.compile(r"(?<![\w/:.-])(?:benchmarks/)?results/(?:[\w.*<>/-]|\{[^{}\s`]*\})*")


def expand(text: str) -> list[str]:
    """Shell-style brace expansion: ``a.{json,txt}`` -> ``a.json``, ``a.txt``."""
    m = re.search(r"\{([^{}]*)\}", text)
    if not m:
        return [text]
    return [x for part in m.group(1).split(",")
            for x in expand(text[:m.start()] + part + text[m.end():])]


def ignored() -> list[str]:
    """The .gitignore patterns of result files (sample sets), relative to benchmarks/results/."""
    prefix = "benchmarks/results/"
    lines = (ROOT / ".gitignore").read_text().splitlines()
    return [ln.strip()[len(prefix):] for ln in lines if ln.strip().startswith(prefix)]


def result_files() -> list[str]:
    skip = ignored()
    return sorted(rel for p in RESULTS.rglob("*") if p.is_file()
                  and (rel := p.relative_to(RESULTS).as_posix()) != "README.md"
                  and not any(fnmatch.fnmatch(rel, pat) for pat in skip))


def index_names() -> set[str]:
    """Every path the index names (in backticks, braces expanded), relative to results/."""
    names = set()
    for span in re.findall(r"`([^`]+)`", INDEX.read_text()):
        for word in span.split():
            for name in expand(word):
                names.add(name.removeprefix("benchmarks/results/"))
    return names


def test_gitignore_covers_sample_sets_in_topic_folders():
    assert set(ignored()) >= {"eval/*_full_samples.npz", "codec/codec_floor_*_samples.npz"}


def test_every_result_file_is_in_the_index():
    files = result_files()
    assert len(files) > 50  # the walk found the results
    assert all(f.split("/")[0] in TOPICS for f in files), "a result outside the topic folders"
    names = index_names()
    missing = [f for f in files if f not in names]
    assert not missing, f"not named in benchmarks/results/README.md: {missing}"


def test_index_names_only_files_that_exist():
    stale = [n for n in index_names() if n.split("/")[0] in TOPICS and not any(
        c in n for c in "*<") and not (RESULTS / n).exists()]
    assert not stale, f"benchmarks/results/README.md names missing files: {stale}"


def test_results_paths_in_docs_exist():
    missing = []
    for doc in DOCS:
        for raw in PATH.findall((ROOT / doc).read_text()):
            for path in expand(raw.rstrip(".")):
                base = ROOT if path.startswith("benchmarks/") else ROOT / "benchmarks"
                pattern = re.sub(r"<[^<>]*>", "*", path)
                found = (list(base.glob(pattern.rstrip("/"))) if "*" in pattern
                         else [base / path] if (base / path).exists() else [])
                if not found:
                    missing.append(f"{doc}: {path}")
    assert not missing, "results paths named in the docs that do not exist:\n" + "\n".join(
        missing)


def test_docs_name_results_paths():
    # the check above must see the paths: the docs name at least these
    text = (ROOT / "BENCHMARKS.md").read_text()
    found = {p for raw in PATH.findall(text) for p in expand(raw)}
    assert "results/sampling/sample_speed_fashion-mnist_h200_fp16w128_tf32.json" in found
    assert "results/codec/codec_lengths.json" in found
    assert "benchmarks/results/codec/codec_prefix_psnr.json" in {
        p for raw in PATH.findall((ROOT / "README.md").read_text()) for p in expand(raw)}
