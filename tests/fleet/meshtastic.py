"""
Meshtastic packets as a gateway node publishes them to ``<root>/2/e/<channel>/<gateway>``, made with Meshtastic's
own schemas (``meshtastic.protobuf``) and encrypted as the firmware does (``CryptoEngine``), for the unit and
integration tests.
"""

from lorrygate.decoding.meshtastic_protobuf import DEFAULT_KEY, channel_hash


def envelope(app: str, message, *, sender=2130636288, packet_id=1412106178, channel="LongFast", key=DEFAULT_KEY,
             channel_number=None, gateway="!a1b2c3d4", request_id=0, **packet) -> bytes:
    """A ServiceEnvelope as a gateway node publishes it, made with Meshtastic's own schemas; encrypted as the
    firmware does (AES-CTR, the nonce the packet id and the sender, each 64 bits little-endian) unless key is
    None."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from meshtastic.protobuf import mesh_pb2, mqtt_pb2, portnums_pb2

    data = mesh_pb2.Data(portnum=portnums_pb2.PortNum.Value(app),
                         payload=message if isinstance(message, bytes) else message.SerializeToString(),
                         request_id=request_id)
    fields = {"to": 0xFFFFFFFF, "id": packet_id, "rx_time": 1716837450, "rx_snr": 6.25, "rx_rssi": -94,
              "hop_limit": 2, "hop_start": 3, **packet}
    mesh_packet = mesh_pb2.MeshPacket(**fields)
    setattr(mesh_packet, "from", sender)
    if key is None:
        mesh_packet.decoded.CopyFrom(data)
    else:
        nonce = packet_id.to_bytes(8, "little") + sender.to_bytes(8, "little")
        encryptor = Cipher(algorithms.AES(key), modes.CTR(nonce)).encryptor()
        mesh_packet.encrypted = encryptor.update(data.SerializeToString()) + encryptor.finalize()
        mesh_packet.channel = channel_hash(channel, key) if channel_number is None else channel_number
    return mqtt_pb2.ServiceEnvelope(packet=mesh_packet, channel_id=channel, gateway_id=gateway).SerializeToString()
