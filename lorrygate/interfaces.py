"""
The extension points of lorrygate, as zope.interface contracts.

Each implementation declares ``@implementer(...)`` and has a compliance test
(``verifyObject``). User modules dropped into ``strategies/`` are checked
against these at start-up.
"""

from zope.interface import Attribute, Interface


class ISource(Interface):
    """Something that receives messages and hands them to a consumer.

    A source is also a Twisted ``IService``: ``startService`` connects,
    ``stopService`` disconnects after pending acknowledgements went out.
    """

    name = Attribute("The source's name, as in the config (str).")

    paused = Attribute("Whether anybody holds the source paused (bool).")

    def pause(holder):
        """Stop reading for ``holder`` (backpressure): nothing is dropped.

        Each consumer holds its own pause; see `lorrygate.sources.pauses`.
        """

    def resume(holder):
        """Let go of ``holder``'s pause; reading resumes once nobody holds one."""


class IStrategy(Interface):
    """A topology strategy: topic -> address -> table."""

    name = Attribute("The name a channel selects the strategy by (str).")

    def match(topic):
        """Return the `lorrygate.model.Address` of a topic.

        Raise `lorrygate.errors.TopologyError` saying why when the topic does
        not fit the strategy.
        """

    def table_for(address):
        """Return the `lorrygate.model.TableName` records of an address go to."""


class IDecoder(Interface):
    """Turns one message's payload into records."""

    name = Attribute("The name a decoder chain selects the decoder by (str).")

    def decode(message, address):
        """Return a list of `lorrygate.model.Record` (or a Deferred of one).

        Raise `lorrygate.errors.Declined` when the payload is not of this
        decoder's format, so that the chain tries the next decoder; raise
        `lorrygate.errors.DecodeError` when it is, but is broken.
        """


class IStorage(Interface):
    """A storage target: commits batches of rows and dead letters."""

    name = Attribute("The storage's name, as in the config (str).")

    def start():
        """Open connections and threads; a Deferred that fails with
        `lorrygate.errors.StorageError` when the target cannot be used."""

    def stop():
        """Close connections and stop threads; a Deferred."""

    def write(batch):
        """Commit a `lorrygate.storage.batch.Batch`.

        Return a Deferred that fires once every row and dead letter of the
        batch is durable, and fails with `lorrygate.errors.StorageError`
        otherwise (nothing of the batch may then count as stored).
        """
