"""A pytest plugin (installed with detdemo, entry point ``pytest11``): exported-model parity as tests in the
user's own CI, with nothing to write.

    pytest --detdemo-export exported/ [--detdemo-images photos/] [--detdemo-data data/] [--junitxml parity.xml]

collects one test per exported file x check, named ``<folder>::<file>::parity`` (detection by detection against
the eager checkpoint on the probe images) and ``<folder>::<file>::accuracy`` (the AP gate, when
``--detdemo-data`` is given). A failure's message is the checker's own reasons (which probe, which detection, by
how much). A reduced-precision file is judged by its AP: its parity test is skipped with the figures, its accuracy
test is its verdict, and without labelled data it is skipped, saying so. An AP gate whose interval straddles its
limit (INCONCLUSIVE: too few images to tell, ``export.gate``) is skipped with the figures and roughly how many
images would decide it; a skip is never a pass.

The check runs once per folder, when its first test runs, on the same ``export.check.check_export`` that
``detdemo check-export`` uses. The ``detdemo_parity`` fixture gives custom tests the report object.

Nothing heavy is imported until a check runs: the plugin loads in every pytest session of an environment that
has detdemo installed, and must cost those sessions nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_RESULTS = pytest.StashKey[dict]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("detdemo", "detdemo: exported-model parity tests")
    group.addoption("--detdemo-export", action="append", default=[], metavar="DIR",
                    help="an export folder (from `detdemo export`) to test; repeat for several")
    group.addoption("--detdemo-images", action="append", default=[], metavar="PATH",
                    help="probe images or folders of images (default: synthetic probes); repeat for several")
    group.addoption("--detdemo-data", default=None, metavar="PATH",
                    help="a labelled dataset: adds each file's AP gate against eager")
    group.addoption("--detdemo-split", default="val", help="the dataset split for --detdemo-data (default val)")
    group.addoption("--detdemo-device", default="cpu", help="where every backend runs: cpu, cuda, cuda:N or auto")
    group.addoption("--detdemo-probes", default="full", choices=("full", "basic"),
                    help="full: the images plus blank, tiny, large and grayscale probes; basic: images and blank")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_RESULTS] = {}


class CheckFailed(Exception):
    """A check's verdict was FAIL; the message is the checker's reasons."""


class ExportFolder(pytest.Collector):
    """One export folder: its tests are named from the manifest alone (no model is loaded to collect them)."""

    def __init__(self, *, folder: Path, **kwargs) -> None:
        super().__init__(**kwargs)
        self.folder = folder

    def collect(self):
        from export.check import planned_cases

        with_data = bool(self.config.getoption("detdemo_data"))
        for file, path, check in planned_cases(self.folder, with_data):
            yield ExportCheckItem.from_parent(self, name=f"{path.name}::{check}", file=file, check=check)


class ExportCheckItem(pytest.Item):
    def __init__(self, *, file: str, check: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.file, self.check = file, check

    def runtest(self) -> None:
        result = _folder_result(self.config, self.parent.folder)
        case = result.case(self.file, self.check)
        if case.outcome == "skipped":
            pytest.skip(case.message)
        if case.outcome == "failed":
            raise CheckFailed(case.message)

    def repr_failure(self, excinfo, style=None):
        from detdemo.errors import DetDemoError

        if excinfo.errisinstance((CheckFailed, DetDemoError)):
            return f"{self.parent.folder / self.name}: {excinfo.value}"
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, None, ""  # the node id as it is (a domain would have its dots shown as ::)


def _folder_result(config: pytest.Config, folder: Path):
    """The folder's check, run once and shared by its tests (an unusable input fails each of them alike)."""
    from detdemo.errors import DetDemoError
    from export.check import check_export

    cache = config.stash[_RESULTS]
    if folder not in cache:
        try:
            cache[folder] = check_export(folder, images=config.getoption("detdemo_images") or None,
                                         data=config.getoption("detdemo_data"),
                                         split=config.getoption("detdemo_split"),
                                         device=config.getoption("detdemo_device"),
                                         probes=config.getoption("detdemo_probes"))
        except DetDemoError as exc:
            cache[folder] = exc
    if isinstance(cache[folder], Exception):
        raise cache[folder]
    return cache[folder]


@pytest.hookimpl(tryfirst=True)  # before -k / -m deselection, so those select among these tests too
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    from _pytest.pathlib import bestrelpath

    from detdemo.errors import DetDemoError

    for text in config.getoption("detdemo_export"):
        folder = Path(text)
        # named like a test file, by its path from the rootdir: pytest shows it relative to where it was run
        nodeid = bestrelpath(config.rootpath, folder.resolve())
        collector = ExportFolder.from_parent(session, name=text, nodeid=nodeid, path=folder.resolve(), folder=folder)
        try:
            items.extend(collector.collect())
        except DetDemoError as exc:
            raise pytest.UsageError(f"--detdemo-export {text}: {exc}") from None


@pytest.fixture(scope="session")
def detdemo_parity():
    """``detdemo_parity(folder, images=None, data=None, **options)`` -> ``export.check.ExportCheck`` (cached per
    folder and options): the report object for custom assertions, e.g.
    ``assert detdemo_parity("exported").case("onnx", "parity").outcome == "passed"``."""
    from export.check import check_export

    cache: dict = {}

    def run(folder, **options):
        key = (str(folder), repr(sorted(options.items())))
        if key not in cache:
            cache[key] = check_export(folder, **options)
        return cache[key]

    return run
