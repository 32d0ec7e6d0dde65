import pytest

from .cluster import Cluster


@pytest.fixture
def cluster(tmp_path):
    """A 3-member cluster, started; every process is killed at teardown."""
    c = Cluster(tmp_path)
    c.start()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(params=["inline-fsync", "background-fsync"])
def any_fsync_cluster(tmp_path, request):
    """The same, once with fsync in the member loop and once on its fsync thread."""
    c = Cluster(
        tmp_path, extra_env={"CRUISE_BACKGROUND_FSYNC": "1" if request.param == "background-fsync" else "0"}
    )
    c.start()
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def make_cluster(tmp_path):
    """Build clusters with other settings; each is started by the test and killed at teardown."""
    made = []

    def make(n=3, **settings):
        c = Cluster(tmp_path / f"c{len(made)}", n, **settings)
        made.append(c)
        return c

    (tmp_path / "c0").mkdir(exist_ok=True)
    try:
        yield make
    finally:
        for c in made:
            c.close()
