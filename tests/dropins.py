"""Drop-in modules of the tests' strategies directories."""


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
