"""gRPC server reflection, both versions clients ask for: `grpc.reflection.v1` (grpcurl
1.8.8+, Postman, current grpc_cli) and `grpc.reflection.v1alpha` (older clients).

grpcio-reflection ships only v1alpha. The v1 protocol is the same messages under another
package, field for field, so the v1 service is the same servicer behind a second name:
the descriptor of `grpc/reflection/v1/reflection.proto` is the v1alpha one renamed (so a
client can ask reflection about itself), and requests and answers go through the v1alpha
message classes, whose bytes are identical.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE = f"{V1_PACKAGE}.ServerReflection"
V1_FILE = "grpc/reflection/v1/reflection.proto"


def _register_v1_descriptor() -> None:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(V1_FILE)
        return
    except KeyError:
        pass
    fd = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(fd)
    old = fd.package
    fd.name, fd.package = V1_FILE, V1_PACKAGE
    for msg in fd.message_type:
        for field in msg.field:
            if field.type_name.startswith(f".{old}."):
                field.type_name = f".{V1_PACKAGE}." + field.type_name.removeprefix(f".{old}.")
    for svc in fd.service:
        for m in svc.method:
            m.input_type = f".{V1_PACKAGE}." + m.input_type.rsplit(".", 1)[1]
            m.output_type = f".{V1_PACKAGE}." + m.output_type.rsplit(".", 1)[1]
    pool.Add(fd)


def enable(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection v1 and v1alpha for `service_names` (both reflection services are
    added to the list)."""
    _register_v1_descriptor()
    names = [*service_names, reflection.SERVICE_NAME, V1_SERVICE]
    servicer = reflection.aio.ReflectionServicer(names)
    server.add_generic_rpc_handlers(tuple(
        grpc.method_handlers_generic_handler(service, {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            ),
        })
        for service in (reflection.SERVICE_NAME, V1_SERVICE)
    ))
