import pytest

from tests.servers import Mosquitto


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory):
    """A real Mosquitto on its own port, for the whole test session."""
    broker = Mosquitto(str(tmp_path_factory.mktemp("mosquitto"))).start()
    yield broker
    broker.stop()


def pytest_collection_modifyitems(items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
