"""Rich error details on the wire: ``google.rpc.Status`` with ``BadRequest`` violations.

The server attaches the standard ``grpc-status-details-bin`` trailer, so grpcurl, Go and
Java clients decode field violations as they would from any Google-style API. The message
types are declared here, in a private descriptor pool, because googleapis-common-protos
is not a dependency; only the wire format and the ``type_url`` matter to a reader, and a
private pool cannot clash with the real ``google.rpc`` package if it is installed too.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

DETAILS_KEY = "grpc-status-details-bin"
BAD_REQUEST_TYPE_URL = "type.googleapis.com/google.rpc.BadRequest"


def _build_pool() -> descriptor_pool.DescriptorPool:
    f = descriptor_pb2.FileDescriptorProto(
        name="segd_private/rpc_status.proto",
        package="segd_private.rpc",
        syntax="proto3",
    )
    t = descriptor_pb2.FieldDescriptorProto

    def msg(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        m = f.message_type.add(name=name)
        for fname, number, ftype, label, type_name in fields:
            field = m.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                field.type_name = type_name

    opt, rep = t.LABEL_OPTIONAL, t.LABEL_REPEATED
    msg(
        "Any",
        ("type_url", 1, t.TYPE_STRING, opt, ""),
        ("value", 2, t.TYPE_BYTES, opt, ""),
    )
    msg(
        "Status",
        ("code", 1, t.TYPE_INT32, opt, ""),
        ("message", 2, t.TYPE_STRING, opt, ""),
        ("details", 3, t.TYPE_MESSAGE, rep, ".segd_private.rpc.Any"),
    )
    msg(
        "FieldViolation",
        ("field", 1, t.TYPE_STRING, opt, ""),
        ("description", 2, t.TYPE_STRING, opt, ""),
    )
    msg(
        "BadRequest",
        (
            "field_violations",
            1,
            t.TYPE_MESSAGE,
            rep,
            ".segd_private.rpc.FieldViolation",
        ),
    )
    info = f.message_type.add(name="ErrorInfo")
    info.field.add(name="reason", number=1, type=t.TYPE_STRING, label=opt)
    info.field.add(name="domain", number=2, type=t.TYPE_STRING, label=opt)
    entry = info.nested_type.add(name="MetadataEntry")
    entry.field.add(name="key", number=1, type=t.TYPE_STRING, label=opt)
    entry.field.add(name="value", number=2, type=t.TYPE_STRING, label=opt)
    entry.options.map_entry = True
    info.field.add(
        name="metadata",
        number=3,
        type=t.TYPE_MESSAGE,
        label=rep,
        type_name=".segd_private.rpc.ErrorInfo.MetadataEntry",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return pool


_POOL = _build_pool()
Status = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("segd_private.rpc.Status")
)
BadRequest = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("segd_private.rpc.BadRequest")
)
ErrorInfo = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName("segd_private.rpc.ErrorInfo")
)
ERROR_INFO_TYPE_URL = "type.googleapis.com/google.rpc.ErrorInfo"
ERROR_DOMAIN = "segd"


def encode_bad_request(
    code: int,
    message: str,
    violations: list[tuple[str, str]],
    info: tuple[str, dict[str, str]] | None = None,
) -> bytes:
    """Serialize a google.rpc.Status carrying one BadRequest with ``(field, description)``
    and, when given, one ErrorInfo ``(reason, metadata)``: the error's structure (kind,
    row, column, reason) as strings, so no client has to parse the message."""
    bad = BadRequest()
    for field, description in violations:
        bad.field_violations.add(field=field, description=description)
    status = Status(code=code, message=message)
    status.details.add(type_url=BAD_REQUEST_TYPE_URL, value=bad.SerializeToString())
    if info is not None:
        reason, metadata = info
        detail = ErrorInfo(reason=reason, domain=ERROR_DOMAIN)
        detail.metadata.update(metadata)
        status.details.add(
            type_url=ERROR_INFO_TYPE_URL, value=detail.SerializeToString()
        )
    return status.SerializeToString()


def decode_error_info(data: bytes) -> tuple[str, dict[str, str]] | None:
    """``(reason, metadata)`` of the first ErrorInfo in a serialized Status, if any."""
    status = Status()
    status.ParseFromString(data)
    for any_msg in status.details:
        if any_msg.type_url.endswith("/google.rpc.ErrorInfo"):
            info = ErrorInfo()
            info.ParseFromString(any_msg.value)
            return info.reason, dict(info.metadata)
    return None


def decode_violations(data: bytes) -> list[tuple[str, str]]:
    """The ``(field, description)`` pairs of every BadRequest in a serialized Status."""
    status = Status()
    status.ParseFromString(data)
    out: list[tuple[str, str]] = []
    for any_msg in status.details:
        if any_msg.type_url.endswith("/google.rpc.BadRequest"):
            bad = BadRequest()
            bad.ParseFromString(any_msg.value)
            out.extend((v.field, v.description) for v in bad.field_violations)
    return out
