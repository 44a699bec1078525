"""Repository rules that pytest alone would report confusingly."""

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).parent


def test_test_module_basenames_are_unique() -> None:
    # pytest's default import mode imports test modules by basename: two test_x.py in different folders
    # break collection with an "import file mismatch". Prefix modules with their area instead.
    names = Counter(p.name for p in TESTS.rglob("*.py") if p.name != "conftest.py")
    assert not [n for n, c in names.items() if c > 1], f"duplicate test module names: {names.most_common(3)}"


def test_core_never_imports_the_harness() -> None:
    harness = ("firmware", "simulators", "scenarios", "hil", "loadtests", "bench")
    offenders = []
    for path in (TESTS.parent / "tds_core").rglob("*.py"):
        for line in path.read_text(encoding="utf-8").splitlines():
            words = line.strip().split()
            if len(words) >= 2 and words[0] in ("import", "from") and words[1].split(".")[0] in harness:
                offenders.append(f"{path.relative_to(TESTS.parent)}: {line.strip()}")
    assert not offenders, offenders


def test_firmware_uses_only_the_protocol_from_the_core() -> None:
    # The same payload code must be what a board runs, and a board installs nothing else of the core.
    offenders = []
    for path in (TESTS.parent / "firmware").rglob("*.py"):
        for line in path.read_text(encoding="utf-8").splitlines():
            words = line.strip().split()
            if len(words) >= 2 and words[0] in ("import", "from") and words[1].startswith("tds_core") \
                    and not words[1].startswith("tds_core.protocol"):
                offenders.append(f"{path.relative_to(TESTS.parent)}: {line.strip()}")
    assert not offenders, offenders
