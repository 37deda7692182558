import os

import pytest

from tests.servers import Mosquitto, PostgreSQL


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory):
    """A real Mosquitto on its own port, for the whole test session."""
    broker = Mosquitto(str(tmp_path_factory.mktemp("mosquitto"))).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL on its own port, for the whole test session."""
    server = PostgreSQL().start()
    yield server
    server.stop()


@pytest.fixture(scope="session", autouse=True)
def working_directory_of_its_own(tmp_path_factory):
    """Tests (and the gateways they start) run in a working directory of their own, not in the checkout: after
    ``make run`` the checkout's var/ holds a gateway's files, and a configuration in a test's folder whose
    data_dir is var would be refused as one moved from the working directory (lorrygate.config.paths.moved).
    A test reads the checkout's files by their absolute path; ``python -m tests.<helper>`` finds the helpers
    through a link to them."""
    before = os.getcwd()
    here = tmp_path_factory.mktemp("cwd")
    os.symlink(os.path.dirname(os.path.abspath(__file__)), here / "tests")
    os.chdir(here)
    yield
    os.chdir(before)


@pytest.fixture(autouse=True)
def no_gateway_left_running():
    """A test that fails half-way must not leave its gateway process behind."""
    from tests.gatewayproc import RUNNING

    yield
    while RUNNING:
        process = RUNNING.pop()
        if process.poll() is None:
            process.kill()
            process.wait()


def pytest_collection_modifyitems(items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
