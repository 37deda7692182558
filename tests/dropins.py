"""Drop-in modules of the tests' strategies directories, and the config around them."""

#: a broker ``b`` and a storage ``s`` for the channels of a test, with drop-ins from ``{strategies}``
GATEWAY = """
[lorrygate]
strategies = {strategies}

[broker:b]
host = localhost

[storage:s]
url = sqlite:///x.sqlite
"""


def channel(name: str = "c", **keys: str) -> str:
    """A ``[channel:NAME]`` of broker ``b`` and storage ``s`` for every topic, with ``keys`` (``strategy = ...``)."""
    return f"\n[channel:{name}]\nsource = b\ntopics = #\nstorage = s\n" + "".join(
        f"{key} = {value}\n" for key, value in keys.items())


def strategy_module(name: str = "mine", table: str = '"r", address.node') -> str:
    """A drop-in strategy ``name``: a topic's last level is the node, ``TableName(<table>)`` its table."""
    return f'''
import attrs
from zope.interface import implementer
from lorrygate.interfaces import IStrategy
from lorrygate.model import Address, TableName

@implementer(IStrategy)
@attrs.frozen
class Mine:
    name: str = "{name}"
    def match(self, topic):
        return Address("r", None, None, topic.rsplit("/", 1)[-1], "data")
    def table_for(self, address):
        return TableName({table})
'''
