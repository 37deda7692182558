"""Every strategy, table-driven: topic -> (address, schema, table), or the reason it is refused."""

import os

import pytest

from lorrygate.config import loads
from lorrygate.errors import TopologyError
from lorrygate.model import Address
from lorrygate.topology import STRATEGIES
from lorrygate.topology.template import TemplateStrategy
from lorrygate.topology.wan import WanStrategy

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LONG = "x" * 300

TEMPLATE = TemplateStrategy.from_texts(
    "sites", "{realm}/sites/{site}/{node}/{kind:data|event}.json", "{realm}_{site}", "{node}_{suffix}"
)
TEMPLATE_REST = TemplateStrategy.from_texts("rest", "archive/{node}/{path:#}", "archive", "{node}_{kind}", "event")


def strategy(name):
    if name == "sites":
        return TEMPLATE
    if name == "rest":
        return TEMPLATE_REST
    if name == "wan-allow":
        return WanStrategy(networks=("itest", "acme"))
    if name == "z2m-attribute":
        return loads("[broker:b]\nhost=h\n[storage:s]\nurl=sqlite:///x\n[strategy:z2m]\ntype=zigbee2mqtt\n"
                     "output=attribute\n[channel:c]\nsource=b\ntopics=#\nstorage=s\nstrategy=z2m\n").strategies["z2m"]()
    if name == "z2m-both":
        return loads("[broker:b]\nhost=h\n[storage:s]\nurl=sqlite:///x\n[strategy:z2m]\ntype=zigbee2mqtt\n"
                     "output=attribute_and_json\n[channel:c]\nsource=b\ntopics=#\nstorage=s\nstrategy=z2m\n"
                     ).strategies["z2m"]()
    if name == "omg-base":
        return loads("[broker:b]\nhost=h\n[storage:s]\nurl=sqlite:///x\n[strategy:omg]\ntype=openmqttgateway\n"
                     "base=site/ble\n[channel:c]\nsource=b\ntopics=#\nstorage=s\nstrategy=omg\n").strategies["omg"]()
    if name == "mesh-json":
        from lorrygate.topology.meshtastic import MeshtasticStrategy

        return MeshtasticStrategy(output="json")
    if name == "dtu-multi":
        return loads("[broker:b]\nhost=h\n[storage:s]\nurl=sqlite:///x\n[strategy:dtu]\ntype=opendtu\n"
                     "base=solar/+/\n[channel:c]\nsource=b\ntopics=#\nstorage=s\nstrategy=dtu\n").strategies["dtu"]()
    if name == "ha-statestream":
        return STRATEGIES["homeassistant"](base="home/statestream")
    if name == "factory":
        return loads(
            "[broker:b]\nhost=h\n[storage:s]\nurl=sqlite:///x\n[channel:c]\nsource=b\ntopics=#\nstorage=s\n",
            base_dir=ROOT).strategies["factory"]()
    return STRATEGIES[name]()


def A(realm, network, gateway, node, kind="data", rest="data.json", field=None, labels=()):
    return Address(realm, network, gateway, node, kind, rest, field, labels)


# (strategy, topic, address, schema, table)
ROUTED = [
    # -- WAN, Kotori's own examples --
    ("wan", "mqttkit-1/testdrive/area-42/node-1/data.json",
     A("mqttkit-1", "testdrive", "area-42", "node-1"), "mqttkit_1_testdrive", "area_42_node_1_sensors"),
    ("wan", "myrealm/acme/area-42/foo-70b3d57ed005dac6/data.json",
     A("myrealm", "acme", "area-42", "foo-70b3d57ed005dac6"), "myrealm_acme", "area_42_foo_70b3d57ed005dac6_sensors"),
    ("wan", "myrealm/channel/myrealm-acme-area42-eui70b3d57ed005dac6/data.json",
     A("myrealm", "acme", "area42", "eui70b3d57ed005dac6"), "myrealm_acme", "area42_eui70b3d57ed005dac6_sensors"),
    ("wan", "mqttkit-1/channel/itest-foo-bar/data.json",
     A("mqttkit-1", "itest", "foo", "bar"), "mqttkit_1_itest", "foo_bar_sensors"),
    ("wan", "mqttkit-1/channel/mqttkit-1-itest-foo-bar/data.json",
     A("mqttkit-1", "itest", "foo", "bar"), "mqttkit_1_itest", "foo_bar_sensors"),
    ("wan", "mqttkit-1/channel/foo-bar/data.json",
     A("mqttkit-1", "default", "foo", "bar"), "mqttkit_1_default", "foo_bar_sensors"),
    ("wan", "mqttkit-1/channel/bar/data.json",
     A("mqttkit-1", "default", "default", "bar"), "mqttkit_1_default", "default_bar_sensors"),
    ("wan", "mqttkit-1/channel/itest-foo-bar-baz-qux/data.json",
     A("mqttkit-1", "itest", "foo", "bar-baz-qux"), "mqttkit_1_itest", "foo_bar_baz_qux_sensors"),
    ("wan", "mqttkit-1/device/123e4567-e89b-12d3-a456-426614174000/data.json",
     A("mqttkit-1", "devices", "default", "123e4567-e89b-12d3-a456-426614174000"),
     "mqttkit_1_devices", "default_123e4567_e89b_12d3_a456_426614174000_sensors"),
    ("wan", "mqttkit-1/device/abc/event.json",
     A("mqttkit-1", "devices", "default", "abc", "event", "event.json"), "mqttkit_1_devices", "default_abc_events"),
    ("wan", "mqttkit-1/device/abc/data/temperature",
     A("mqttkit-1", "devices", "default", "abc", "data", "data/temperature", "temperature"),
     "mqttkit_1_devices", "default_abc_sensors"),
    # -- WAN suffixes --
    ("wan", "r/n/g/d/data/__json__", A("r", "n", "g", "d", rest="data/__json__"), "r_n", "g_d_sensors"),
    ("wan", "r/n/g/d/message-json", A("r", "n", "g", "d", rest="message-json"), "r_n", "g_d_sensors"),
    ("wan", "r/n/g/d/data/humidity", A("r", "n", "g", "d", rest="data/humidity", field="humidity"), "r_n", "g_d_sensors"),
    ("wan", "r/n/g/d/measure/humidity", A("r", "n", "g", "d", rest="measure/humidity", field="humidity"), "r_n", "g_d_sensors"),
    ("wan", "r/n/g/d/event.json", A("r", "n", "g", "d", "event", "event.json"), "r_n", "g_d_events"),
    ("wan", "r/n/g/d/event/__json__", A("r", "n", "g", "d", "event", "event/__json__"), "r_n", "g_d_events"),
    ("wan", "r/n/g/d/error.json", A("r", "n", "g", "d", "error", "error.json"), "r_n", "g_d_errors"),
    ("wan", "weewx/home/station/vantage/loop", A("weewx", "home", "station", "vantage", rest="loop"),
     "weewx_home", "station_vantage_sensors"),
    ("wan", "r/n/g/sonoff-1/tele/SENSOR", A("r", "n", "g", "sonoff-1", rest="tele/SENSOR"), "r_n", "g_sonoff_1_sensors"),
    ("wan", "r/n/g/sonoff-1/tele/STATE", A("r", "n", "g", "sonoff-1", rest="tele/STATE"), "r_n", "g_sonoff_1_sensors"),
    ("wan", "r/device/g/n/data.json", A("r", "device", "g", "n"), "r_device", "g_n_sensors"),
    ("wan", "Realm.X/Net Work/GW/Node;DROP TABLE x/data.json",
     A("Realm.X", "Net Work", "GW", "Node;DROP TABLE x"), "realm_x_net_work", "gw_node_drop_table_x_sensors"),
    ("wan", "ümlaut/netz/gw/knoten/data.json", A("ümlaut", "netz", "gw", "knoten"), "umlaut_netz", "gw_knoten_sensors"),
    ("wan", "传感器/网络/网关/节点/data.json", A("传感器", "网络", "网关", "节点"),
     "____a4f7cbe4____97b31b5d", "___38f36ed3____2410d860_sensors"),
    ("wan", 'r/n/g/"quoted"/data.json', A("r", "n", "g", '"quoted"'), "r_n", "g__quoted__sensors"),
    ("wan-allow", "mqttkit-1/channel/itest-foo-bar/data.json",
     A("mqttkit-1", "itest", "foo", "bar"), "mqttkit_1_itest", "foo_bar_sensors"),
    ("wan-allow", "r/acme/g/n/data.json", A("r", "acme", "g", "n"), "r_acme", "g_n_sensors"),
    # -- LAN --
    ("lan", "home/kitchen/data.json", A("home", None, None, "kitchen"), "home_kitchen", "sensors"),
    ("lan", "home/kitchen/event.json", A("home", None, None, "kitchen", "event", "event.json"), "home_kitchen", "events"),
    ("lan", "home/kitchen/data/temp", A("home", None, None, "kitchen", rest="data/temp", field="temp"), "home_kitchen", "sensors"),
    ("lan", "home/Living Room/loop", A("home", None, None, "Living Room", rest="loop"), "home_living_room", "sensors"),
    # -- Tasmota --
    ("tasmota", "tele/sonoff-pow/SENSOR", A("tasmota", None, None, "sonoff-pow", rest="SENSOR"), "tasmota", "sonoff_pow_sensors"),
    ("tasmota", "tele/sonoff-pow/STATE", A("tasmota", None, None, "sonoff-pow", rest="STATE"), "tasmota", "sonoff_pow_sensors"),
    ("tasmota", "tele/sonoff-pow/LWT", A("tasmota", None, None, "sonoff-pow", "event", "tele/LWT", "LWT"), "tasmota", "sonoff_pow_events"),
    ("tasmota", "tele/sonoff-pow/INFO1", A("tasmota", None, None, "sonoff-pow", "event", "tele/INFO1", "INFO1"), "tasmota", "sonoff_pow_events"),
    ("tasmota", "stat/sonoff-pow/RESULT", A("tasmota", None, None, "sonoff-pow", "event", "stat/RESULT", "RESULT"), "tasmota", "sonoff_pow_events"),
    ("tasmota", "stat/sonoff-pow/POWER", A("tasmota", None, None, "sonoff-pow", "event", "stat/POWER", "POWER"), "tasmota", "sonoff_pow_events"),
    ("tasmota", "tele/rf-bridge/RESULT", A("tasmota", None, None, "rf-bridge", "event", "tele/RESULT", "RESULT"), "tasmota", "rf_bridge_events"),
    ("tasmota", "tele/sonoff-pow/MARGINS", A("tasmota", None, None, "sonoff-pow", "event", "tele/MARGINS", "MARGINS"), "tasmota", "sonoff_pow_events"),
    ("tasmota", "tele/sonoff-pow/UPTIME", A("tasmota", None, None, "sonoff-pow", "event", "tele/UPTIME", "UPTIME"), "tasmota", "sonoff_pow_events"),
    # Zigbee2Tasmota's topic a Zigbee device (SetOption89, SetOption112, SetOption118): the bridge's table
    ("tasmota", "tele/zbbridge/8F20/SENSOR", A("tasmota", None, None, "zbbridge", rest="8F20/SENSOR"), "tasmota", "zbbridge_sensors"),
    ("tasmota", "tele/zbbridge/Kitchen/SENSOR", A("tasmota", None, None, "zbbridge", rest="Kitchen/SENSOR"), "tasmota", "zbbridge_sensors"),
    ("tasmota", "tele/zbbridge/8F20/ZbReceived", A("tasmota", None, None, "zbbridge", rest="8F20/ZbReceived"), "tasmota", "zbbridge_sensors"),
    ("tasmota", "tele/8F20/ZbReceived", A("tasmota", None, None, "8F20", rest="ZbReceived"), "tasmota", "8f20_sensors"),
    # OpenMQTTGateway, Theengs Gateway: a table a gateway and module, the devices its rows' tags
    ("openmqttgateway", "home/OMG_ESP32_BLE/BTtoMQTT/A4C138BB1B6E",
     A("openmqttgateway", None, "OMG_ESP32_BLE", "BT", rest="BTtoMQTT/A4C138BB1B6E"), "openmqttgateway",
     "omg_esp32_ble_bt_sensors"),
    ("openmqttgateway", "home/OMG_ESP32_BLE/RTL_433toMQTT/Acurite-Tower/A/9053",
     A("openmqttgateway", None, "OMG_ESP32_BLE", "RTL_433", rest="RTL_433toMQTT/Acurite-Tower/A/9053"),
     "openmqttgateway", "omg_esp32_ble_rtl_433_sensors"),
    ("openmqttgateway", "home/OMG_ESP32_BLE/SYStoMQTT",
     A("openmqttgateway", None, "OMG_ESP32_BLE", "SYS", rest="SYStoMQTT"), "openmqttgateway", "omg_esp32_ble_sys_sensors"),
    ("openmqttgateway", "home/TheengsGateway/LWT",
     A("openmqttgateway", None, "TheengsGateway", None, "event", "LWT", "LWT"), "openmqttgateway",
     "theengsgateway_events"),
    # Home Assistant room presence: each device's rssi and distance a gateway's room hears, data
    ("openmqttgateway", "home/presence/kitchen",
     A("openmqttgateway", None, "presence", "kitchen", rest="presence/kitchen"), "openmqttgateway",
     "presence_kitchen_sensors"),
    ("omg-base", "site/ble/gw1/BTtoMQTT/A4C138BB1B6E",
     A("openmqttgateway", None, "gw1", "BT", rest="BTtoMQTT/A4C138BB1B6E"), "openmqttgateway", "gw1_bt_sensors"),
    ("tasmota", "tele/tasmota_ble/ATCbb1b6e", A("tasmota", None, None, "ATCbb1b6e", rest="tasmota_ble"), "tasmota", "atcbb1b6e_sensors"),
    # -- OpenDTU: a table an inverter, the channel a tag; the DTU and the totals tables of their own --
    ("opendtu", "solar/114182912345/0/power",
     A("solar", None, None, "114182912345", "data", "0/power", "power", (("channel", "0"),)), "solar",
     "114182912345_sensors"),
    ("opendtu", "solar/114182912345/2/yieldtotal",
     A("solar", None, None, "114182912345", "data", "2/yieldtotal", "yieldtotal", (("channel", "2"),)), "solar",
     "114182912345_sensors"),
    ("opendtu", "solar/114182912345/status/reachable",
     A("solar", None, None, "114182912345", "data", "status/reachable", "status.reachable"), "solar",
     "114182912345_sensors"),
    ("opendtu", "solar/114182912345/name", A("solar", None, None, "114182912345", "data", "name", "name"), "solar",
     "114182912345_sensors"),
    ("opendtu", "solar/dtu/heap/free", A("solar", None, None, "dtu", "data", "heap/free", "heap.free"), "solar",
     "dtu_sensors"),
    ("opendtu", "solar/ac/power", A("solar", None, None, "ac", "data", "power", "power"), "solar", "ac_sensors"),
    ("opendtu", "solar/dtu/status", A("solar", None, None, "dtu", "event", "status", "status"), "solar", "dtu_events"),
    ("dtu-multi", "solar/garage/114182912345/1/power",
     A("solar/garage", None, None, "114182912345", "data", "1/power", "power", (("channel", "1"),)), "solar_garage",
     "114182912345_sensors"),
    ("dtu-multi", "solar/Dach Süd/dtu/status", A("solar/Dach Süd", None, None, "dtu", "event", "status", "status"),
     "solar_dach_sud", "dtu_events"),
    # -- AhoyDTU: a table an inverter, the channel (ch0) a tag; the DTU's values one level below the base --
    ("ahoy", "inverter/HM-600/ch0/P_AC",
     A("inverter", None, None, "HM-600", "data", "ch0/P_AC", "P_AC", (("channel", "0"),)), "inverter", "hm_600_sensors"),
    ("ahoy", "inverter/HM-600/ch1", A("inverter", None, None, "HM-600", "data", "ch1", None, (("channel", "1"),)),
     "inverter", "hm_600_sensors"),
    ("ahoy", "inverter/HM-600/firmware", A("inverter", None, None, "HM-600", "data", "firmware", "firmware"),
     "inverter", "hm_600_sensors"),
    ("ahoy", "inverter/HM-600/alarm/cnt", A("inverter", None, None, "HM-600", "data", "alarm/cnt", "alarm.cnt"),
     "inverter", "hm_600_sensors"),
    ("ahoy", "inverter/HM-600/alarm/0", A("inverter", None, None, "HM-600", "event", "alarm/0"), "inverter",
     "hm_600_events"),
    ("ahoy", "inverter/total", A("inverter", None, None, "total", "data", "total"), "inverter", "total_sensors"),
    ("ahoy", "inverter/total/P_AC", A("inverter", None, None, "total", "data", "P_AC", "P_AC"), "inverter",
     "total_sensors"),
    ("ahoy", "inverter/wifi_rssi", A("inverter", None, None, "dtu", "data", "wifi_rssi", "wifi_rssi"), "inverter",
     "dtu_sensors"),
    ("ahoy", "inverter/mqtt", A("inverter", None, None, "dtu", "event", "mqtt", "mqtt"), "inverter", "dtu_events"),
    # -- Ruuvi Gateway: a table a gateway, the sensor's MAC a tag --
    ("ruuvi", "ruuvi/C8:25:2D:8E:9C:2C/CB:B8:33:4C:88:4F",
     A("ruuvi", None, "C8:25:2D:8E:9C:2C", None, "data", "CB:B8:33:4C:88:4F", None, (("mac", "CB:B8:33:4C:88:4F"),)),
     "ruuvi", "c8_25_2d_8e_9c_2c_sensors"),
    ("ruuvi", "ruuvi/C8:25:2D:8E:9C:2C/gw_status", A("ruuvi", None, "C8:25:2D:8E:9C:2C", None, "event", "gw_status"),
     "ruuvi", "c8_25_2d_8e_9c_2c_events"),
    ("ruuvi", "ruuvi/CB:B8:33:4C:88:4F", A("ruuvi", None, None, None, "data", "CB:B8:33:4C:88:4F", None,
                                            (("mac", "CB:B8:33:4C:88:4F"),)), "ruuvi", "sensors"),
    ("ruuvi", "ruuvi/gw_status", A("ruuvi", None, None, None, "event", "gw_status"), "ruuvi", "events"),
    # -- Meshtastic: a table a mesh channel in the schema of the root and region, the gateway node a tag --
    ("meshtastic", "msh/EU_868/2/e/LongFast/!a1b2c3d4",
     A("msh", "EU_868", "!a1b2c3d4", None, "data", "LongFast", None, (("gateway", "!a1b2c3d4"),)),
     "msh_eu_868", "longfast_sensors"),
    ("meshtastic", "msh/US/CA/Motherlode/2/e/LongFast/!a1b2c3d4",
     A("msh", "US/CA/Motherlode", "!a1b2c3d4", None, "data", "LongFast", None, (("gateway", "!a1b2c3d4"),)),
     "msh_us_ca_motherlode", "longfast_sensors"),
    ("meshtastic", "msh/2/c/PKI/!a1b2c3d4",  # a root without a region, firmware before 2.3; direct messages
     A("msh", None, "!a1b2c3d4", None, "data", "PKI", None, (("gateway", "!a1b2c3d4"),)), "msh", "pki_sensors"),
    ("meshtastic", "msh/EU_868/2/stat/!a1b2c3d4",
     A("msh", "EU_868", "!a1b2c3d4", None, "event", "stat", None, (("gateway", "!a1b2c3d4"),)), "msh_eu_868",
     "events"),
    ("meshtastic", "msh/EU_868/2/map/", A("msh", "EU_868", None, None, "data", "map"), "msh_eu_868", "map_sensors"),
    ("mesh-json", "msh/EU_868/2/json/LongFast/!a1b2c3d4",
     A("msh", "EU_868", "!a1b2c3d4", None, "data", "LongFast", None, (("gateway", "!a1b2c3d4"),)),
     "msh_eu_868", "longfast_sensors"),
    # -- emonHub (OpenEnergyMonitor): a table a node, an input a column --
    ("emon", "emon/emontx4/P1", A("emon", None, None, "emontx4", "data", "P1", "P1"), "emon", "emontx4_sensors"),
    ("emon", "emon/emontx4", A("emon", None, None, "emontx4", "data", ""), "emon", "emontx4_sensors"),
    ("emon", "emon/emonth5/sensor/temperature",
     A("emon", None, None, "emonth5", "data", "sensor/temperature", "sensor.temperature"), "emon", "emonth5_sensors"),
    ("mesh-json", "msh/EU_868/2/json/mqtt/!a1b2c3d4",  # the uplink of a channel named mqtt
     A("msh", "EU_868", "!a1b2c3d4", None, "data", "mqtt", None, (("gateway", "!a1b2c3d4"),)),
     "msh_eu_868", "mqtt_sensors"),
    # -- Homie --
    ("homie", "homie/boiler/temperature/current", A("homie", None, None, "boiler_temperature", "data", "current", "current"),
     "homie", "boiler_temperature_sensors"),
    ("homie", "homie/super-car/engine/speed", A("homie", None, None, "super-car_engine", "data", "speed", "speed"),
     "homie", "super_car_engine_sensors"),
    ("homie", "homie/boiler/$state", A("homie", None, None, "boiler", "event", "$state", "$state"), "homie", "boiler_events"),
    ("homie", "homie/boiler/temperature/$name", A("homie", None, None, "boiler", "event", "temperature/$name", "temperature/$name"),
     "homie", "boiler_events"),
    # Homie 5: homie/5/<device>/... (each value was a dead letter, and $state an event of a device "5")
    ("homie", "homie/5/boiler/temperature/current", A("homie", None, None, "boiler_temperature", "data", "current",
                                                      "current"), "homie", "boiler_temperature_sensors"),
    ("homie", "homie/5/boiler/$state", A("homie", None, None, "boiler", "event", "$state", "$state"), "homie",
     "boiler_events"),
    ("homie", "homie/5/boiler/temperature/current/$target",
     A("homie", None, None, "boiler", "event", "temperature/current/$target", "temperature/current/$target"), "homie",
     "boiler_events"),
    ("homie", "homie/5/$broadcast/alert", A("homie", None, None, "broadcast", "event", "$broadcast/alert", "alert"),
     "homie", "broadcast_events"),
    ("homie", "homie/$broadcast/alert", A("homie", None, None, "broadcast", "event", "$broadcast/alert", "alert"),
     "homie", "broadcast_events"),
    ("homie", "homie/boiler/temperature/current/$unit",
     A("homie", None, None, "boiler", "event", "temperature/current/$unit", "temperature/current/$unit"), "homie", "boiler_events"),
    # -- The Things Stack v3 --
    ("ttn", "v3/my-app@ttn/devices/eui-70b3d57ed005dac6/up",
     A("ttn", "my-app", None, "eui-70b3d57ed005dac6", "data", "up"), "ttn_my_app", "eui_70b3d57ed005dac6_sensors"),
    ("ttn", "v3/my-app@acme/devices/dev1/join", A("acme", "my-app", None, "dev1", "event", "join"), "acme_my_app", "dev1_events"),
    ("ttn", "v3/my-app@ttn/devices/dev1/down/sent", A("ttn", "my-app", None, "dev1", "event", "down/sent"), "ttn_my_app", "dev1_events"),
    ("ttn", "v3/my-app@ttn/devices/dev1/location/solved",
     A("ttn", "my-app", None, "dev1", "event", "location/solved"), "ttn_my_app", "dev1_events"),
    # -- ChirpStack v4 --
    ("chirpstack", "application/0b9e8f5a-1d3c-4f77-9d65-37d5b2a4f2b1/device/0102030405060708/event/up",
     A("chirpstack", "0b9e8f5a-1d3c-4f77-9d65-37d5b2a4f2b1", None, "0102030405060708", "data", "event/up"),
     "chirpstack_0b9e8f5a_1d3c_4f77_9d65_37d5b2a4f2b1", "0102030405060708_sensors"),
    ("chirpstack", "application/app1/device/0102030405060708/event/join",
     A("chirpstack", "app1", None, "0102030405060708", "event", "event/join"), "chirpstack_app1", "0102030405060708_events"),
    ("chirpstack", "application/app1/device/0102030405060708/event/status",
     A("chirpstack", "app1", None, "0102030405060708", "event", "event/status"), "chirpstack_app1", "0102030405060708_events"),
    ("chirpstack", "application/123/device/0202020202020202/event/error",
     A("chirpstack", "123", None, "0202020202020202", "event", "event/error"), "chirpstack_123", "0202020202020202_events"),
    # -- ChirpStack v3's first topics, LoRa App Server v2 --
    ("chirpstack", "application/123/device/0202020202020202/rx",
     A("chirpstack", "123", None, "0202020202020202", "data", "rx"), "chirpstack_123", "0202020202020202_sensors"),
    ("chirpstack", "application/123/device/0202020202020202/status",
     A("chirpstack", "123", None, "0202020202020202", "event", "status"), "chirpstack_123", "0202020202020202_events"),
    ("chirpstack", "application/123/device/0202020202020202/join",
     A("chirpstack", "123", None, "0202020202020202", "event", "join"), "chirpstack_123", "0202020202020202_events"),
    # -- Zigbee2MQTT with output: attribute (one topic a value; nested values joined by "-") --
    ("z2m-attribute", "zigbee2mqtt/kitchen_sensor/temperature",
     A("zigbee2mqtt", None, None, "kitchen_sensor", "data", "temperature", "temperature"),
     "zigbee2mqtt", "kitchen_sensor_sensors"),
    ("z2m-attribute", "zigbee2mqtt/floor1/hall/motion/occupancy",
     A("zigbee2mqtt", None, None, "floor1/hall/motion", "data", "occupancy", "occupancy"),
     "zigbee2mqtt", "floor1_hall_motion_sensors"),
    ("z2m-attribute", "zigbee2mqtt/lamp/color-x", A("zigbee2mqtt", None, None, "lamp", "data", "color-x", "color.x"),
     "zigbee2mqtt", "lamp_sensors"),
    # -- output: attribute_and_json (a device's state, or a copy of a value: the zigbee2mqtt decoder tells) --
    ("z2m-both", "zigbee2mqtt/kitchen", A("zigbee2mqtt", None, None, "kitchen", "data", ""), "zigbee2mqtt",
     "kitchen_sensors"),
    ("z2m-both", "zigbee2mqtt/kitchen/temperature",
     A("zigbee2mqtt", None, None, "kitchen/temperature", "data", "attribute_or_state"), "zigbee2mqtt",
     "kitchen_temperature_sensors"),
    ("z2m-both", "zigbee2mqtt/lamp/availability",
     A("zigbee2mqtt", None, None, "lamp", "event", "availability", "availability"), "zigbee2mqtt", "lamp_events"),
    ("z2m-attribute", "zigbee2mqtt/lamp/availability",
     A("zigbee2mqtt", None, None, "lamp", "event", "availability", "availability"), "zigbee2mqtt", "lamp_events"),
    # -- Zigbee2MQTT --
    ("zigbee2mqtt", "zigbee2mqtt/living_room_sensor", A("zigbee2mqtt", None, None, "living_room_sensor", "data", ""),
     "zigbee2mqtt", "living_room_sensor_sensors"),
    ("zigbee2mqtt", "zigbee2mqtt/Kitchen Lamp", A("zigbee2mqtt", None, None, "Kitchen Lamp", "data", ""),
     "zigbee2mqtt", "kitchen_lamp_sensors"),
    ("zigbee2mqtt", "zigbee2mqtt/floor1/hall/motion", A("zigbee2mqtt", None, None, "floor1/hall/motion", "data", ""),
     "zigbee2mqtt", "floor1_hall_motion_sensors"),
    ("zigbee2mqtt", "zigbee2mqtt/hall/availability", A("zigbee2mqtt", None, None, "hall", "event", "availability", "availability"),
     "zigbee2mqtt", "hall_events"),
    ("zigbee2mqtt", "zigbee2mqtt/bridge/state", A("zigbee2mqtt", None, None, "bridge", "event", "bridge/state", "state"),
     "zigbee2mqtt", "bridge_events"),
    # -- Shelly Gen2 --
    ("shelly", "shellyplus1pm-a8032ab12345/status/switch:0",
     A("shelly", None, None, "shellyplus1pm-a8032ab12345", "data", "status/switch:0", labels=(("component", "switch:0"),)),
     "shelly", "shellyplus1pm_a8032ab12345_sensors"),
    ("shelly", "shellyplus1pm-a8032ab12345/events/rpc",
     A("shelly", None, None, "shellyplus1pm-a8032ab12345", "data", "events/rpc"), "shelly", "shellyplus1pm_a8032ab12345_sensors"),
    ("shelly", "shellyplus1pm-a8032ab12345/online",
     A("shelly", None, None, "shellyplus1pm-a8032ab12345", "event", "online", "online"), "shelly", "shellyplus1pm_a8032ab12345_events"),
    # -- Shelly Gen1 --
    # a prefix set on the device (levels of its own): it names the device; the debug log and Gen1's shared
    # announcement are events (they were dead letters)
    ("shelly", "home/kitchen/plug/status/switch:0",
     A("shelly", None, None, "home/kitchen/plug", "data", "status/switch:0", labels=(("component", "switch:0"),)),
     "shelly", "home_kitchen_plug_sensors"),
    ("shelly", "home/kitchen/plug/events/rpc",
     A("shelly", None, None, "home/kitchen/plug", "data", "events/rpc"), "shelly", "home_kitchen_plug_sensors"),
    ("shelly", "home/kitchen/plug/online",
     A("shelly", None, None, "home/kitchen/plug", "event", "online", "online"), "shelly", "home_kitchen_plug_events"),
    ("shelly", "shellyplus1pm-a8/debug/log",
     A("shelly", None, None, "shellyplus1pm-a8", "event", "debug/log", "debug_log"), "shelly",
     "shellyplus1pm_a8_events"),
    ("shelly", "shellies/announce",
     A("shelly", None, None, "shellies", "event", "announce", "announce"), "shelly", "shellies_events"),
    ("shelly", "shellies/shelly1pm-84CCA8A1B2C3/relay/0",
     A("shelly", None, None, "shelly1pm-84CCA8A1B2C3", "data", "relay/0", "state", (("component", "relay:0"),)),
     "shelly", "shelly1pm_84cca8a1b2c3_sensors"),
    ("shelly", "shellies/shelly1pm-84CCA8A1B2C3/relay/0/power",
     A("shelly", None, None, "shelly1pm-84CCA8A1B2C3", "data", "relay/0/power", "power", (("component", "relay:0"),)),
     "shelly", "shelly1pm_84cca8a1b2c3_sensors"),
    ("shelly", "shellies/shellyht-6FBA3C/sensor/temperature",
     A("shelly", None, None, "shellyht-6FBA3C", "data", "sensor/temperature", "temperature", (("component", "sensor"),)),
     "shelly", "shellyht_6fba3c_sensors"),
    ("shelly", "shellies/shelly1pm-84CCA8A1B2C3/temperature",
     A("shelly", None, None, "shelly1pm-84CCA8A1B2C3", "data", "temperature", "temperature"),
     "shelly", "shelly1pm_84cca8a1b2c3_sensors"),
    ("shelly", "shellies/shelly1pm-84CCA8A1B2C3/online",
     A("shelly", None, None, "shelly1pm-84CCA8A1B2C3", "event", "online", "online"),
     "shelly", "shelly1pm_84cca8a1b2c3_events"),
    # a button pushed: an event of its input (it was a row of the device's sensors)
    ("shelly", "shellies/shellybutton1-A4CF12F45301/input_event/0",
     A("shelly", None, None, "shellybutton1-A4CF12F45301", "event", "input_event/0", "input_event",
       (("component", "input:0"),)), "shelly", "shellybutton1_a4cf12f45301_events"),
    ("shelly", "shellies/shelly1pm-84CCA8A1B2C3/announce",
     A("shelly", None, None, "shelly1pm-84CCA8A1B2C3", "event", "announce", "announce"),
     "shelly", "shelly1pm_84cca8a1b2c3_events"),
    # -- Sparkplug B: an edge node's own metrics, its devices', a host application's STATE --
    ("sparkplug", "spBv1.0/Plant 1/NBIRTH/Edge-7", A("sparkplug", "Plant 1", "Edge-7", None, "data", "NBIRTH"),
     "sparkplug_plant_1", "edge_7_sensors"),
    ("sparkplug", "spBv1.0/Plant 1/NDATA/Edge-7", A("sparkplug", "Plant 1", "Edge-7", None, "data", "NDATA"),
     "sparkplug_plant_1", "edge_7_sensors"),
    ("sparkplug", "spBv1.0/Plant 1/NDEATH/Edge-7", A("sparkplug", "Plant 1", "Edge-7", None, "event", "NDEATH"),
     "sparkplug_plant_1", "edge_7_events"),
    ("sparkplug", "spBv1.0/Plant 1/DBIRTH/Edge-7/PLC1", A("sparkplug", "Plant 1", "Edge-7", "PLC1", "data", "DBIRTH"),
     "sparkplug_plant_1", "edge_7_plc1_sensors"),
    ("sparkplug", "spBv1.0/Plant 1/DDATA/Edge-7/PLC1", A("sparkplug", "Plant 1", "Edge-7", "PLC1", "data", "DDATA"),
     "sparkplug_plant_1", "edge_7_plc1_sensors"),
    ("sparkplug", "spBv1.0/Plant 1/DDEATH/Edge-7/PLC1", A("sparkplug", "Plant 1", "Edge-7", "PLC1", "event", "DDEATH"),
     "sparkplug_plant_1", "edge_7_plc1_events"),
    ("sparkplug", "spBv1.0/STATE/scada-host", A("sparkplug", None, None, "scada-host", "event", "STATE", "state"),
     "sparkplug", "scada_host_events"),
    ("sparkplug", "STATE/scada-host", A("sparkplug", None, None, "scada-host", "event", "STATE", "state"),
     "sparkplug", "scada_host_events"),
    # -- Home Assistant's MQTT Statestream: an entity's state, timestamps and attributes --
    ("homeassistant", "homeassistant/sensor/kitchen_temperature/state",
     A("homeassistant", None, None, "sensor.kitchen_temperature", "data", "state", "state"), "homeassistant",
     "sensor_kitchen_temperature_sensors"),
    ("homeassistant", "homeassistant/binary_sensor/door/last_changed",
     A("homeassistant", None, None, "binary_sensor.door", "data", "last_changed", "last_changed"), "homeassistant",
     "binary_sensor_door_sensors"),
    ("homeassistant", "homeassistant/sensor/kitchen_temperature/unit_of_measurement",
     A("homeassistant", None, None, "sensor.kitchen_temperature", "data", "unit_of_measurement",
       "unit_of_measurement"), "homeassistant", "sensor_kitchen_temperature_sensors"),
    ("ha-statestream", "home/statestream/switch/kettle/state",
     A("home/statestream", None, None, "switch.kettle", "data", "state", "state"), "home_statestream",
     "switch_kettle_sensors"),
    # -- ESPHome: a state a topic, the object id the field; a climate's properties; prefixes with levels --
    ("esphome", "livingroom/sensor/temperature/state",
     A("esphome", None, None, "livingroom", "data", "sensor/temperature/state", "temperature",
       (("component", "sensor"),)), "esphome", "livingroom_sensors"),
    ("esphome", "livingroom/binary_sensor/motion/state",
     A("esphome", None, None, "livingroom", "data", "binary_sensor/motion/state", "motion",
       (("component", "binary_sensor"),)), "esphome", "livingroom_sensors"),
    ("esphome", "livingroom/climate/thermostat/current_temperature/state",
     A("esphome", None, None, "livingroom", "data", "climate/thermostat/current_temperature/state",
       "thermostat.current_temperature", (("component", "climate"),)), "esphome", "livingroom_sensors"),
    ("esphome", "home/kitchen/sensor/humidity/state",
     A("esphome", None, None, "home/kitchen", "data", "sensor/humidity/state", "humidity",
       (("component", "sensor"),)), "esphome", "home_kitchen_sensors"),
    ("esphome", "livingroom/status", A("esphome", None, None, "livingroom", "event", "status", "status"),
     "esphome", "livingroom_events"),
    ("esphome", "livingroom/debug", A("esphome", None, None, "livingroom", "event", "debug", "debug"),
     "esphome", "livingroom_events"),
    # -- OwnTracks: locations, and events of the app --
    ("owntracks", "owntracks/jane/phone", A("owntracks", None, "jane", "phone", "data", ""), "owntracks",
     "jane_phone_sensors"),
    ("owntracks", "owntracks/jane/phone/event", A("owntracks", None, "jane", "phone", "event", "event"), "owntracks",
     "jane_phone_events"),
    ("owntracks", "owntracks/jane/phone/waypoints", A("owntracks", None, "jane", "phone", "event", "waypoints"),
     "owntracks", "jane_phone_events"),
    # -- Venus OS (Victron GX devices), dbus-flashmq --
    ("victron", "N/c0619ab1234/battery/512/Dc/0/Voltage",
     A("victron", None, "c0619ab1234", "battery/512", "data", "Dc/0/Voltage", "Dc/0/Voltage"), "victron",
     "c0619ab1234_battery_512_sensors"),
    ("victron", "N/c0619ab1234/keepalive", A("victron", None, "c0619ab1234", None, "event", "keepalive", "keepalive"),
     "victron", "c0619ab1234_events"),
    # -- rtl_433 (433 MHz sensors through a software-defined radio) --
    ("rtl_433", "rtl_433/pi4/events", A("rtl_433", None, "pi4", None, "data", "events"), "rtl_433", "pi4_sensors"),
    ("rtl_433", "rtl_433/pi4/states", A("rtl_433", None, "pi4", None, "event", "states"), "rtl_433", "pi4_events"),
    # -- declarative templates --
    ("sites", "acme/sites/Berlin-1/pump-7/data.json",
     A("acme", None, None, "pump-7", "data", "acme/sites/Berlin-1/pump-7/data.json", labels=(("site", "Berlin-1"),)),
     "acme_berlin_1", "pump_7_sensors"),
    ("sites", "acme/sites/b/p/event.json",
     A("acme", None, None, "p", "event", "acme/sites/b/p/event.json", labels=(("site", "b"),)), "acme_b", "p_events"),
    ("rest", "archive/n1/2024/06/01",
     A("", None, None, "n1", "event", "archive/n1/2024/06/01", labels=(("path", "2024/06/01"),)), "archive", "n1_event"),
    # -- the example drop-in --
    ("factory", "factory/line-1/press-7/telemetry", A("factory", "line-1", None, "press-7", "data", "telemetry"),
     "factory_line_1", "press_7_sensors"),
    ("factory", "factory/line-1/press-7/alarm", A("factory", "line-1", None, "press-7", "event", "alarm"),
     "factory_line_1", "press_7_alarms"),
    # -- any topic (relays, topic trees without a convention) --
    ("topic", "factory/hall-2/press-7/temperature", A("factory", None, None, None, "data", "hall-2/press-7/temperature",
                                                       "value"),
     "factory", "hall_2_press_7_temperature"),
    ("topic", "alone", A("alone", None, None, None, "data", "", "value"), "alone", "data"),
]

REFUSED = [
    ("wan", "mqttkit-1/testdrive/area-42/node-1/dta.json", "unknown suffix 'dta.json' (did you mean 'data.json'?): "
                                                           "expected data.json, "),
    ("lan", "home/kitchen/event.jsn", "unknown suffix 'event.jsn' (did you mean 'event.json'?)"),
    ("wan", "mqttkit-1/testdrive/area-42/node-1/readings", "unknown suffix 'readings': expected data.json"),
    ("rtl_433", "rtl_433/pi4/other", "expected rtl_433/<hostname>/events"),
    ("rtl_433", "rtl_433//events", "the hostname level is empty"),
    ("victron", "N/c0619ab1234/vebus/276", "expected N/<portal ID>/<service type>/<device instance>/<D-Bus path>"),
    ("victron", "N//battery/512/Soc", "the portal ID level is empty"),
    ("victron", "N/c0619ab1234/battery/512/Dc//Voltage", "the D-Bus path has an empty level"),
    ("owntracks", "owntracks/jane", "expected owntracks/<user>/<device> (locations)"),
    ("owntracks", "owntracks/jane/phone/selfie", "expected owntracks/<user>/<device>"),
    ("owntracks", "owntracks//phone", "the user level is empty"),
    ("homeassistant", "homeassistant/sensor/state", "expected homeassistant/<domain>/<object id>/state"),
    ("homeassistant", "homeassistant/sensor//state", "the object id level is empty"),
    ("ha-statestream", "homeassistant/sensor/x/state", "expected home/statestream/<domain>"),
    ("esphome", "livingroom/sensor/temperature", "expected <prefix>/<component>/<object id>/state"),
    ("esphome", "livingroom/gadget/temperature/state", "expected <prefix>/<component>"),
    ("esphome", "livingroom/sensor//state", "the object id level is empty"),
    ("esphome", "/status", "the device level is empty"),
    ("esphome", "home//status", "expected a topic with no empty levels"),
    ("esphome", "+/sensor/temperature/state", "the device level is a wildcard"),
    ("sparkplug", "spBv1.0/Plant 1/NDATA", "expected spBv1.0/<group>/NBIRTH|NDATA|NDEATH/<edge node>"),
    ("sparkplug", "spBv1.0/Plant 1/DDATA/Edge-7", "expected"),  # a device's type without the device
    ("sparkplug", "spBv1.0/Plant 1/NDATA/Edge-7/PLC1", "expected"),  # an edge node's type with a device
    ("sparkplug", "spBv1.0//NDATA/Edge-7", "the group level is empty"),
    ("sparkplug", "spBv1.0/Plant 1/DDATA/Edge-7/+", "the device level is a wildcard"),
    ("sparkplug", "spAv1.0/Plant 1/NDATA/Edge-7", "expected"),
    ("wan", "weewx//loop", "at least 5 levels"),
    ("wan", "one", "got 1 level"),
    ("wan", "", "got 1 level"),
    ("wan", "a/b/c/d", "got 4 level"),
    ("wan", "sensors/kitchen", "a tree of another shape needs a strategy of its own (strategy = topic takes any)"),
    ("wan", "a/b//d/data.json", "the gateway level is empty"),
    ("wan", "/b/c/d/data.json", "the realm level is empty"),
    ("wan", "a/b/c/d/", "unknown suffix ''"),
    ("wan", "a/b/c/d/data.json/", "unknown suffix 'data.json/'"),
    ("wan", "a/b/c/d/data.xml", "unknown suffix 'data.xml'"),
    ("wan", "a/b/c/d/data/", "unknown suffix 'data/'"),
    ("wan", "a/b/c/d/data/+", "unknown suffix 'data/+'"),
    ("wan", "a/+/c/d/data.json", "the network level is a wildcard '+'"),
    ("wan", "a/b/c/#/data.json", "the node level is a wildcard '#'"),
    ("wan", "a/b/c/d/data.json/extra", "unknown suffix"),
    ("wan", "r/device//data.json", "the device level is empty"),
    ("wan", "r/channel/--/data.json", "the network level is empty"),
    ("wan", f"r/n/g/{LONG}/nope", "unknown suffix 'nope'"),
    ("wan-allow", "r/other/g/n/data.json", "network 'other' is not in the channel's allowed networks (itest, acme)"),
    ("wan-allow", "r/channel/other-g-n/data.json", "network 'other' is not in"),
    ("lan", "home/data.json", "at least 3 levels"),
    ("lan", "home//data.json", "the node level is empty"),
    ("lan", "home/kitchen/what", "unknown suffix 'what'"),
    ("tasmota", "tele//SENSOR", "the device level is empty"),
    ("tasmota", "tele/sonoff/SENSOR/x", "expected tele/<device>/SENSOR or STATE (data)"),
    ("tasmota", "tele/zbbridge//SENSOR", "the Zigbee device level is empty"),
    ("tasmota", "tele/tasmota_ble/+", "the BLE sensor level is a wildcard"),
    ("openmqttgateway", "home/OMG_ESP32_BLE", "expected home/<gateway>/<Module>toMQTT[/...]"),
    ("openmqttgateway", "home/OMG_ESP32_BLE/BTtoMQTT/", "a module's topic with an empty level or a wildcard"),
    ("openmqttgateway", "home//BTtoMQTT/A4C138BB1B6E", "the gateway level is empty"),
    ("openmqttgateway", "home/OMG_ESP32_BLE/presence/room", "expected home/<gateway>/<Module>toMQTT[/...]"),
    ("omg-base", "home/gw1/BTtoMQTT/A4C138BB1B6E", "expected site/ble/<gateway>/<Module>toMQTT[/...]"),
    ("tasmota", "stat/zbbridge/8F20/SENSOR", "tele/<device>/<zigbee device>/SENSOR (Zigbee2Tasmota)"),
    ("tasmota", "tele/zbbridge/8F20/STATE", "expected tele/<device>/SENSOR or STATE (data)"),
    ("tasmota", "tele/sonoff/", "expected tele/<device>/SENSOR or STATE (data)"),
    ("opendtu", "solar/dtu", "expected solar/<inverter serial>/<channel>/<field>"),
    ("opendtu", "home/114182912345/0/power", "expected solar/<inverter serial>/<channel>/<field>"),
    ("opendtu", "solar//0/power", "a topic with an empty level or a wildcard"),
    ("opendtu", "solar/114182912345/0/", "a topic with an empty level or a wildcard"),
    ("dtu-multi", "solar/dtu/status", "expected solar/+/<inverter serial>/<channel>/<field>"),
    ("ahoy", "inverter", "expected inverter/<inverter>/ch<channel>[/<field>]"),
    ("ruuvi", "ruuvi", "expected ruuvi/<gateway>/<sensor MAC> (data) or ruuvi/<gateway>/gw_status"),
    ("ruuvi", "ruuvi/C8:25:2D:8E:9C:2C/CB:B8:33:4C:88:4F/x", "expected ruuvi/<gateway>/<sensor MAC>"),
    ("ruuvi", "ruuvi//CB:B8:33:4C:88:4F", "the gateway level is empty"),
    ("ruuvi", "ruuvi/C8:25:2D:8E:9C:2C/", "the sensor level is empty"),
    ("meshtastic", "msh/EU_868/LongFast/!a1b2c3d4", "expected msh/<region>/2/e/<channel>/<gateway>"),
    ("meshtastic", "mesh/EU_868/2/e/LongFast/!a1b2c3d4", "expected msh/<region>/2/e/<channel>/<gateway>"),
    ("meshtastic", "msh/EU_868/2/e/LongFast/!a1b2c3d4/x", "expected msh/<region>/2/e/<channel>/<gateway>"),
    ("meshtastic", "msh/EU_868/2/e/LongFast/", "the gateway level is empty"),
    ("meshtastic", "msh/EU_868/2/e//!a1b2c3d4", "the channel level is empty"),
    ("meshtastic", "msh//2/e/LongFast/!a1b2c3d4", "a topic with an empty level or a wildcard"),
    ("meshtastic", "msh/EU_868/2/stat/", "the gateway level is empty"),
    ("mesh-json", "msh/EU_868/2/json/LongFast/", "the gateway level is empty"),
    ("emon", "emonhub/rx/10/values", "expected emon/<node>/<input> (emonHub's node variable format"),
    ("emon", "emon/emontx4/", "a topic with an empty level or a wildcard"),
    ("emon", "emon", "expected emon/<node>/<input>"),
    ("mesh-json", "msh/EU/+/2/json/LongFast/!a1b2c3d4", "a topic with an empty level or a wildcard"),
    ("ahoy", "ahoy/HM-600/ch0/P_AC", "expected inverter/<inverter>/ch<channel>[/<field>]"),
    ("ahoy", "inverter/HM-600/ch0/", "a topic with an empty level or a wildcard"),
    ("ahoy", "inverter//ch0/P_AC", "a topic with an empty level or a wildcard"),
    ("homie", "homie/boiler", "expected homie/[5/]<device>/<node>/<property>"),
    ("homie", "other/boiler/t/c", "expected homie/"),
    ("ttn", "v3/my-app/devices/dev1/up", "the tenant level is empty"),
    ("chirpstack", "application/app1/device/0102/event/up/more", "expected application/"),
    ("chirpstack", "application/app1/device/0102/what", "expected application/"),
    ("zigbee2mqtt", "zigbee2mqtt/a//b", "no empty levels"),
    ("zigbee2mqtt", "other/lamp", "expected zigbee2mqtt/<friendly name>"),
    ("shelly", "shellyplus1pm-a8/unknown", "expected <prefix>/status/<component>"),
    ("shelly", "home//plug/status/switch:0", "no empty levels"),
    ("shelly", "shellies/shelly1/relay//power", "no empty levels"),
    ("shelly", "/status/switch:0", "the device level is empty"),
    ("sites", "acme/sites/b/p/error.json", "does not match the template"),
    ("sites", "acme/other/b/p/data.json", "does not match the template"),
    ("sites", "acme/sites/+/p/data.json", "the site level is a wildcard '+'"),
    ("factory", "factory/line-1/press-7", "expected factory/<line>/<machine>/telemetry"),
    ("topic", "/leading/slash", "first level names it"),
]


@pytest.mark.parametrize("name, topic, address, schema, table", ROUTED, ids=[f"{c[0]}:{c[1][:60]}" for c in ROUTED])
def test_routes(name, topic, address, schema, table):
    """Each topic maps to the documented address, schema and table."""
    chosen = strategy(name)
    assert chosen.match(topic) == address
    routed = chosen.table_for(address)
    assert (routed.schema, routed.table) == (schema, table)


@pytest.mark.parametrize("name, topic, reason", REFUSED, ids=[f"{c[0]}:{c[1][:40]}" for c in REFUSED])
def test_refuses_with_a_reason(name, topic, reason):
    """Topics outside a strategy's layout raise TopologyError saying why, nothing else."""
    with pytest.raises(TopologyError) as info:
        strategy(name).match(topic)
    assert reason in info.value.reason
    assert info.value.topic == topic


#: command topics of each convention: ignored (acknowledged and counted), never dead letters
COMMANDS = [
    ("victron", "W/c0619ab1234/vebus/257/Hub4/L1/AcPowerSetpoint"),
    ("victron", "R/c0619ab1234/keepalive"),
    ("owntracks", "owntracks/jane/phone/cmd"),
    ("sparkplug", "spBv1.0/Plant 1/NCMD/Edge-7"),
    ("sparkplug", "spBv1.0/Plant 1/DCMD/Edge-7/PLC1"),
    ("tasmota", "cmnd/sonoff/POWER"),
    ("homie", "homie/boiler/temperature/current/set"),
    ("homie", "homie/5/boiler/temperature/current/set"),
    ("ttn", "v3/my-app@ttn/devices/dev1/down/push"),
    ("ttn", "v3/my-app@ttn/devices/dev1/down/replace"),
    ("chirpstack", "application/app1/device/0102/command/down"),
    ("chirpstack", "application/123/device/0202020202020202/tx"),
    ("zigbee2mqtt", "zigbee2mqtt/lamp/set"),
    ("zigbee2mqtt", "zigbee2mqtt/lamp/set/brightness"),
    ("zigbee2mqtt", "zigbee2mqtt/lamp/get"),
    ("z2m-attribute", "zigbee2mqtt/lamp/set/brightness"),
    ("z2m-both", "zigbee2mqtt/lamp/set"),
    ("zigbee2mqtt", "zigbee2mqtt/bridge/request/permit_join"),
    ("shelly", "shellyplus1pm-a8/rpc"),
    ("shelly", "shellies/shelly1pm-84CCA8A1B2C3/relay/0/command"),
    ("shelly", "shellies/shellyswitch25-1/roller/0/command/pos"),
    ("shelly", "home/kitchen/plug/rpc"),
    ("shelly", "shellyplus1pm-a8/command/switch:0"),
    ("shelly", "shellies/command"),
    ("shelly", "shellies/shellydimmer-EE1234/light/0/set"),  # a Gen1 dimmer's JSON command: it was stored as data
    ("shelly", "shellies/shellyrgbw2-EE1234/color/0/set"),
    ("shelly", "shellies/shellyrgbw2-EE1234/white/2/set"),
    ("esphome", "livingroom/light/ceiling/command"),
    ("openmqttgateway", "home/OMG_ESP32_BLE/commands/MQTTtoSYS/config"),
    ("openmqttgateway", "home/TheengsGateway/commands"),
    ("opendtu", "solar/114182912345/cmd/limit_nonpersistent_absolute"),
    ("opendtu", "solar/114182912345/cmd/restart"),
    ("dtu-multi", "solar/garage/powerlimiter/cmd/mode"),
    ("ahoy", "inverter/ctrl/limit/0"),
    ("ahoy", "inverter/ctrl/restart_ahoy"),
    ("ahoy", "inverter/setup/set_time"),
    ("esphome", "livingroom/climate/thermostat/target_temperature/command"),
    ("esphome", "livingroom/light/ceiling/command/brightness_pct"),
    ("meshtastic", "msh/EU_868/2/json/mqtt/"),
    ("mesh-json", "msh/EU_868/2/json/mqtt/"),
]


@pytest.mark.parametrize("name, topic", COMMANDS, ids=[f"{c[0]}:{c[1][:40]}" for c in COMMANDS])
def test_commands_are_ignored(name, topic):
    """A command topic of a strategy's convention raises Ignored, which the router counts and acknowledges."""
    from lorrygate.errors import Ignored

    with pytest.raises(Ignored, match="a command, not a measurement"):
        strategy(name).match(topic)


@pytest.mark.parametrize("topic", ["homeassistant/sensor/kitchen_temperature/config",
                                   "homeassistant/sensor/esp32/kitchen_temperature/config"])
def test_home_assistants_discovery_configurations_under_the_same_prefix_are_ignored(topic):
    from lorrygate.errors import Ignored

    with pytest.raises(Ignored, match="an MQTT discovery configuration, not a state"):
        strategy("homeassistant").match(topic)


def test_at_least_sixty_cases():
    """The table covers every built-in strategy with at least 60 cases in all."""
    assert len(ROUTED) + len(REFUSED) + len(COMMANDS) >= 60
    covered = {case[0] for case in ROUTED} | {case[0] for case in REFUSED}
    assert set(STRATEGIES) <= covered


@pytest.mark.parametrize("name", ["wan", "lan", "tasmota", "zigbee2mqtt"])
def test_long_levels_shorten_deterministically(name):
    """A 300-character level gives names of at most 63 characters, stable, with a hash telling them apart."""
    topics = {
        "wan": (f"r/n/g/{LONG}/data.json", f"r/n/g/{LONG[:-1]}y/data.json"),
        "lan": (f"r/{LONG}/data.json", f"r/{LONG[:-1]}y/data.json"),
        "tasmota": (f"tele/{LONG}/SENSOR", f"tele/{LONG[:-1]}y/SENSOR"),
        "zigbee2mqtt": (f"zigbee2mqtt/{LONG}", f"zigbee2mqtt/{LONG[:-1]}y"),
    }[name]
    chosen = strategy(name)
    first, second = (chosen.table_for(chosen.match(topic)) for topic in topics)
    assert max(len(first.schema), len(first.table)) <= 63
    assert first == chosen.table_for(chosen.match(topics[0]))
    assert first != second
