"""
A Victron GX device (Venus OS's dbus-flashmq, played by paho-mqtt as the plugin behaves: a retained
``N/<portal ID>/system/0/Serial``, nothing else until kept alive, every value on an empty keep-alive, the values
that change on a ``suppress-republish`` one, all at QoS 0) through a real Mosquitto: the gateway keeps it
alive, stores its values, and after a restart (a persistent session: the subscription is not new) wakes it again.
"""

import json
import re
import subprocess
import sys
import threading
import uuid

import paho.mqtt.client as paho

from tests.gatewayproc import GatewayProcess, query, tables, write_config
from tests.servers import wait_until


class GxDevice:
    def __init__(self, port: int, portal: str):
        self.portal, self.keepalives, self.current = portal, [], 0
        self._subscribed = threading.Event()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        self.client.on_connect = lambda client, *args: client.subscribe(f"R/{portal}/keepalive", qos=0)
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = self._request
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(10), "no SUBACK"
        self.client.publish(f"N/{portal}/system/0/Serial", json.dumps({"value": portal}), qos=0,
                            retain=True).wait_for_publish(10)

    def _notify(self, path, value):
        self.client.publish(f"N/{self.portal}/{path}", json.dumps({"value": value}), qos=0)

    def _request(self, client, userdata, message):
        self.keepalives.append(message.payload)
        self.current += 1
        if not message.payload:  # all values, then the signal that they were all sent
            self._notify("system/0/Serial", self.portal)
            self._notify("battery/512/Dc/0/Voltage", 52.31)
            self._notify("battery/512/Soc", 87.5)
            self._notify("pvinverter/20/Ac/L2/Power", None)
            self._notify("full_publish_completed", 1764939600)
        self._notify("battery/512/Dc/0/Current", self.current)  # (changes: sent while kept alive)
        self._notify("heartbeat", 1764939600 + self.current)

    def close(self):
        self.client.publish(f"N/{self.portal}/system/0/Serial", b"", qos=0, retain=True).wait_for_publish(10)
        self.client.disconnect()
        self.client.loop_stop()


def test_a_gx_device_is_kept_alive_and_its_values_stored_also_after_a_restart(tmp_path, mosquitto):
    portal = f"c0619a{uuid.uuid4().hex[:6]}"
    gx = GxDevice(mosquitto.port, portal)
    config = write_config(str(tmp_path), mosquitto.port, client_id=f"gw-{portal}", topics=f"N/{portal}/#",
                          extra="strategy = victron\ndecoders = vic, json, value\n\n"
                                "[decoder:vic]\ntype = victron\nkeepalive = 1s\n")
    db = str(tmp_path / "gateway.sqlite")
    battery = f"victron__{portal}_battery_512_sensors"
    gateway = GatewayProcess(config, str(tmp_path / "gw.log"))
    try:
        gateway.start(ready="subscribed")
        # the retained Serial told the gateway of the installation: all values asked for, then kept alive
        wait_until(lambda: gx.keepalives[:1] == [b""] and len(gx.keepalives) >= 3, 30, "keep-alives")
        wait_until(lambda: battery in tables(db) and len(query(db, f'SELECT * FROM "{battery}" WHERE '
                                                                   '"Dc/0/Current" IS NOT NULL')) >= 3, 30,
                   "the values that changed while kept alive")
        status = subprocess.run([sys.executable, "-m", "lorrygate.cli", "-c", config, "status"], capture_output=True,
                                text=True, timeout=60).stdout
        assert re.search(r"channel main: .* \d+ keep-alives sent", status), status
        assert gateway.stop() == 0, gateway.text()[-3000:]
        assert [json.loads(p) for p in gx.keepalives[1:]] == [{"keepalive-options": ["suppress-republish"]}] * (
            len(gx.keepalives) - 1)
        rows = query(db, f'SELECT "Dc/0/Voltage", "Soc" FROM "{battery}" WHERE "Dc/0/Voltage" IS NOT NULL OR "Soc" '
                         'IS NOT NULL ORDER BY time')
        assert rows == [(52.31, None), (None, 87.5)]
        serials = query(db, f'SELECT "Serial" FROM "victron__{portal}_system_0_sensors"')
        assert serials[0] == (portal,)
        assert f"victron__{portal}_pvinverter_20_sensors" not in tables(db)  # ({"value": null}: ignored)
        assert query(db, "SELECT count(*) FROM lorrygate_dead_letter") == [(0,)]

        # a restart: the session persists, the subscription is not new; the retained Serial still wakes it
        before = len(gx.keepalives)
        gateway = GatewayProcess(config, str(tmp_path / "gw.log"))
        gateway.start(ready="subscribed")
        wait_until(lambda: b"" in gx.keepalives[before:], 30, "all values asked for after the restart")
        wait_until(lambda: len(query(db, f'SELECT * FROM "{battery}" WHERE "Dc/0/Voltage" IS NOT NULL')) == 2, 30,
                   "the values again")
    finally:
        gateway.stop()
        gx.close()
