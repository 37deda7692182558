"""
The Sparkplug B payload's Protocol Buffers schema, declared here field by
field (the numbers and types of the Sparkplug B specification, 3.0.0, and its
``sparkplug_b.proto``) and built at import with the protobuf runtime: no
generated code, so no protoc and no generated-code version to match the
installed protobuf.

Only what a host that stores readings reads is declared: the payload's
timestamp, seq and metrics; a metric's name, alias, timestamp, datatype,
flags and value, data sets and templates. What else a payload carries
(metadata, property sets, extensions) is skipped by the parser as unknown
fields. `Payload` also encodes, for the tests and for a rebirth command.
"""

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "lorrygate.sparkplug_b"


def _message(parent, name: str, fields: list, oneof: str | None = None):
    """A message type of ``(name, number, type, label, type_name)`` fields; those after ``oneof``'s mark in it."""
    message = parent.add()
    message.name = name
    in_oneof = False
    for field in fields:
        if field == "|":
            message.oneof_decl.add().name = oneof
            in_oneof = True
            continue
        field_name, number, kind, label, type_name = field
        proto = message.field.add()
        proto.name, proto.number, proto.type, proto.label = field_name, number, kind, label
        if type_name:
            proto.type_name = f".{_PACKAGE}.{type_name}"
        if in_oneof:
            proto.oneof_index = 0
    return message


def _file() -> descriptor_pb2.FileDescriptorProto:
    opt, rep = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
    u32, u64, f32, f64 = _F.TYPE_UINT32, _F.TYPE_UINT64, _F.TYPE_FLOAT, _F.TYPE_DOUBLE
    boolean, string, raw, msg = _F.TYPE_BOOL, _F.TYPE_STRING, _F.TYPE_BYTES, _F.TYPE_MESSAGE
    file = descriptor_pb2.FileDescriptorProto(name="lorrygate_sparkplug_b.proto", package=_PACKAGE, syntax="proto2")
    payload = _message(file.message_type, "Payload", [
        ("timestamp", 1, u64, opt, None),
        ("metrics", 2, msg, rep, "Payload.Metric"),
        ("seq", 3, u64, opt, None),
        ("uuid", 4, string, opt, None),
        ("body", 5, raw, opt, None),
    ])
    scalars = [("int_value", u32), ("long_value", u64), ("float_value", f32), ("double_value", f64),
               ("boolean_value", boolean), ("string_value", string)]
    _message(payload.nested_type, "Metric", [
        ("name", 1, string, opt, None),
        ("alias", 2, u64, opt, None),
        ("timestamp", 3, u64, opt, None),
        ("datatype", 4, u32, opt, None),
        ("is_historical", 5, boolean, opt, None),
        ("is_transient", 6, boolean, opt, None),
        ("is_null", 7, boolean, opt, None),
        "|",
        *[(name, 10 + index, kind, opt, None) for index, (name, kind) in enumerate(scalars)],
        ("bytes_value", 16, raw, opt, None),
        ("dataset_value", 17, msg, opt, "Payload.DataSet"),
        ("template_value", 18, msg, opt, "Payload.Template"),
    ], oneof="value")
    dataset = _message(payload.nested_type, "DataSet", [
        ("num_of_columns", 1, u64, opt, None),
        ("columns", 2, string, rep, None),
        ("types", 3, u32, rep, None),
        ("rows", 4, msg, rep, "Payload.DataSet.Row"),
    ])
    _message(dataset.nested_type, "DataSetValue",
             ["|", *[(name, 1 + index, kind, opt, None) for index, (name, kind) in enumerate(scalars)]],
             oneof="value")
    _message(dataset.nested_type, "Row", [("elements", 1, msg, rep, "Payload.DataSet.DataSetValue")])
    _message(payload.nested_type, "Template", [
        ("version", 1, string, opt, None),
        ("metrics", 2, msg, rep, "Payload.Metric"),
        ("template_ref", 4, string, opt, None),
        ("is_definition", 5, boolean, opt, None),
    ])
    return file


_pool = descriptor_pool.DescriptorPool()
_pool.Add(_file())
#: the Sparkplug B payload message class (``Payload.FromString(raw)``, ``payload.SerializeToString()``)
Payload = message_factory.GetMessageClass(_pool.FindMessageTypeByName(f"{_PACKAGE}.Payload"))
