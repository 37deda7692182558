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
