"""
The WebSocket sink's live page in a real browser (headless Chromium, Debian's
package): rows of two addresses appear on the page within a second of being
published to a real Mosquitto, beside a SQLite storage that keeps them.
"""

import json
import textwrap
import time
import urllib.request
import uuid

import pytest

from tests.browser import Chromium, find_chromium
from tests.gatewayproc import GatewayProcess, Publisher, count_rows
from tests.servers import free_port, wait_until

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(find_chromium() is None, reason="chromium is not installed (make test installs it)")]


def test_the_live_page_shows_rows_of_two_addresses_within_a_second(tmp_path, mosquitto):
    realm = f"w{uuid.uuid4().hex[:8]}"
    port = free_port()
    path = tmp_path / "gateway.ini"
    path.write_text(textwrap.dedent(f"""
        [lorrygate]
        data_dir = {tmp_path}
        log_format = json
        control = off

        [broker:local]
        host = 127.0.0.1
        port = {mosquitto.port}
        client_id = gw-{realm}

        [storage:db]
        url = sqlite:///{tmp_path}/gateway.sqlite

        [storage:live]
        url = ws://127.0.0.1:{port}/

        [channel:main]
        topics = {realm}/#
        storage = db, live
        """))
    gateway = GatewayProcess(str(path), str(tmp_path / "gw.log")).start()
    browser = Chromium().start()
    try:
        browser.open(f"http://127.0.0.1:{port}/")
        wait_until(lambda: browser.evaluate("document.body && document.body.dataset.live") == "yes", 30,
                   "the page's WebSocket to open")
        publisher = Publisher(mosquitto.port)
        sent = time.time() * 1000
        publisher.publish_many([(f"{realm}/net/gw/{node}/data.json", json.dumps({"temperature": 20 + n}))
                                for n, node in enumerate(("kitchen", "cellar"))])
        publisher.close()
        rows = wait_until(lambda: (lambda r: r if len(r) == 2 else None)(browser.evaluate(
            "Array.from(document.querySelectorAll('#rows tr')).map(r => "
            "[r.cells[0].textContent, r.cells[3].textContent, Number(r.dataset.firstSeen)])")), 10,
            "two rows on the page")
        by_address = {address: (values, seen) for address, values, seen in rows}
        assert by_address[f"{realm} / net / gw / kitchen"][0] == '{"temperature":20}'
        assert by_address[f"{realm} / net / gw / cellar"][0] == '{"temperature":21}'
        latency = max(seen for _, seen in by_address.values()) - sent
        print(f"published to shown on the page: {latency:.0f} ms")
        assert latency < 1000, f"the rows took {latency:.0f} ms to appear"
        wait_until(lambda: count_rows(str(tmp_path / "gateway.sqlite"), realm) == 2, 30, "the rows kept in SQLite")
        latest = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/latest", timeout=5))
        assert {entry["table"] for entry in latest} == {f"{realm}_net.gw_kitchen_sensors", f"{realm}_net.gw_cellar_sensors"}
    finally:
        browser.stop()
        assert gateway.stop() == 0
