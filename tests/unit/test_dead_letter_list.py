"""``lorrygate dead-letters list`` and ``replay``: reasons alike but for the payload's values are one line."""

import io

from lorrygate.errors import reason_kind
from lorrygate.storage import dead_letters
from lorrygate.storage.dead_letters import KINDS_SHOWN, Kinds


def test_a_reasons_kind_masks_the_values_and_names_it_quotes_not_its_words():
    assert reason_kind("no decoder of the chain [csv,json] accepted the payload (csv: line 1 holds values "
                       "(2024-06-01T12:00:59, 759, 40), not column names)") == (
        "no decoder of the chain [csv,json] accepted the payload (csv: line # holds values (#-#-#T#:#:#, #, #), "
        "not column names)")
    assert reason_kind("decoder 'convert': field 'temperature' is 'hot', not a number") == \
        reason_kind("decoder 'convert': field 'humidity' is \"x\", not a number") == \
        "decoder …: field … is …, not a number"
    assert reason_kind("the channel's hook and convert ran past 2 s") == "the channel's hook and convert ran past # s"
    # a payload kept by reference names its SHA-256: each was a kind of its own, a warning a message
    kept = "a payload of {} bytes is larger than the broker's max_payload; kept by reference, not by copy: sha256 {}"
    assert reason_kind(kept.format(12890, "f626722af011ada5c5db1218945e701889ab6c879d8f54010e27d0f8459faace")) == \
        reason_kind(kept.format(487, "0b3dbe278297e9793285fff7357043d2497fe04b660456753e6f1802ad00c969")) == \
        kept.format("#", "#").replace("sha256", "sha#")
    assert reason_kind("node deadbeef sent cafe") == "node deadbeef sent cafe"  # (words of hex letters stay)


def row(number, channel, stage, error, replayed=None):
    """A row as `Table.pages` gives it (`dead_letters.COLUMNS`)."""
    return (number, f"2026-12-06T10:00:{number % 60:02d}Z", channel, "r/n/g/d/data.csv", 1, False, b"x", stage,
            error, "csv", replayed, None, None, None)


def test_the_list_counts_kinds_of_reason_with_the_latest_as_the_example_and_at_most_twenty_lines():
    """A device that sent 500 lines nothing decodes, each reason quoting its values (and cut at a place that
    depends on their length): one line of 500 with the latest reason; more kinds than `KINDS_SHOWN` end
    in one line that counts the rest."""
    rows = [row(n, "weather", "decode", f"no decoder accepted the payload (csv: line 1 holds values "
                                        f"({n}, {n * 7}, 40), not column names, {'and ' * 60}")
            for n in range(500)]
    rows += [row(500, "weather", "decode", "decode: 'x' is not JSON", "2026-12-06T11:00:00Z")]
    rows += [row(501 + n, f"c{n}", "topology", "no route") for n in range(KINDS_SHOWN + 5)]
    out = io.StringIO()
    dead_letters._list("db", rows, out, 1)
    lines = out.getvalue().splitlines()
    assert lines[0] == f"storage db: {len(rows)} dead letter(s), {len(rows) - 1} not replayed"
    assert lines[1] == "      500  channel weather, decode: " + rows[499][8][:160]
    assert rows[499][8][:160].startswith("no decoder accepted the payload (csv: line 1 holds values (499, 3493, 40)")
    assert lines[2] == f"        1  channel c{KINDS_SHOWN + 4}, topology: no route"  # (of kinds as frequent: the latest)
    assert not any("(replayed)" in line for line in lines[:-1])  # (the oldest of them, counted in the rest)
    assert len(lines) == 1 + KINDS_SHOWN + 1 + 1
    assert lines[-2] == "        7  of 7 other kind(s) of reason; narrow with --channel, --stage, --topic or --since"
    assert lines[-1].startswith(f"  #{rows[-1][0]} ")


def test_kinds_of_a_replays_reasons_as_they_come_oldest_first():
    kinds = Kinds()
    for reason in ("store: value '9' too large", "decode: not JSON", "store: value '10' too large"):
        kinds.add(None, reason)
    assert kinds.ranked() == ([(2, None, "store: value '10' too large"), (1, None, "decode: not JSON")], (0, 0))

