import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from corral.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class NodeletMessage(_message.Message):
    __slots__ = ("register", "heartbeat", "status", "log_data", "batch")
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LOG_DATA_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    register: Register
    heartbeat: Heartbeat
    status: TaskStatus
    log_data: LogData
    batch: NodeletBatch
    def __init__(self, register: _Optional[_Union[Register, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., status: _Optional[_Union[TaskStatus, _Mapping]] = ..., log_data: _Optional[_Union[LogData, _Mapping]] = ..., batch: _Optional[_Union[NodeletBatch, _Mapping]] = ...) -> None: ...

class NodeletBatch(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[NodeletMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[NodeletMessage, _Mapping]]] = ...) -> None: ...

class MasterBatch(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[MasterMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[MasterMessage, _Mapping]]] = ...) -> None: ...

class MasterMessage(_message.Message):
    __slots__ = ("registered", "start", "stop", "ack", "read_logs", "heartbeat_ack", "batch")
    REGISTERED_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    READ_LOGS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_ACK_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    registered: Registered
    start: StartTask
    stop: StopTask
    ack: StatusAck
    read_logs: ReadLogs
    heartbeat_ack: HeartbeatAck
    batch: MasterBatch
    def __init__(self, registered: _Optional[_Union[Registered, _Mapping]] = ..., start: _Optional[_Union[StartTask, _Mapping]] = ..., stop: _Optional[_Union[StopTask, _Mapping]] = ..., ack: _Optional[_Union[StatusAck, _Mapping]] = ..., read_logs: _Optional[_Union[ReadLogs, _Mapping]] = ..., heartbeat_ack: _Optional[_Union[HeartbeatAck, _Mapping]] = ..., batch: _Optional[_Union[MasterBatch, _Mapping]] = ...) -> None: ...

class HeartbeatAck(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    def __init__(self, seq: _Optional[int] = ...) -> None: ...

class Register(_message.Message):
    __slots__ = ("node_id", "address", "capacity", "labels", "drivers", "driver_health", "version", "tasks", "batches")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class DriverHealthEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DRIVERS_FIELD_NUMBER: _ClassVar[int]
    DRIVER_HEALTH_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    capacity: _types_pb2.Resources
    labels: _containers.ScalarMap[str, str]
    drivers: _containers.RepeatedScalarFieldContainer[str]
    driver_health: _containers.ScalarMap[str, str]
    version: str
    tasks: _containers.RepeatedCompositeFieldContainer[TaskStatus]
    batches: bool
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., capacity: _Optional[_Union[_types_pb2.Resources, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., drivers: _Optional[_Iterable[str]] = ..., driver_health: _Optional[_Mapping[str, str]] = ..., version: _Optional[str] = ..., tasks: _Optional[_Iterable[_Union[TaskStatus, _Mapping]]] = ..., batches: _Optional[bool] = ...) -> None: ...

class TaskUsage(_message.Message):
    __slots__ = ("task_id", "cpu", "memory")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    cpu: int
    memory: int
    def __init__(self, task_id: _Optional[str] = ..., cpu: _Optional[int] = ..., memory: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("used", "tasks", "seq", "prepare_per_s", "prepare_p99_ms", "prepare_waiting")
    USED_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    PREPARE_PER_S_FIELD_NUMBER: _ClassVar[int]
    PREPARE_P99_MS_FIELD_NUMBER: _ClassVar[int]
    PREPARE_WAITING_FIELD_NUMBER: _ClassVar[int]
    used: _types_pb2.Resources
    tasks: _containers.RepeatedCompositeFieldContainer[TaskUsage]
    seq: int
    prepare_per_s: float
    prepare_p99_ms: float
    prepare_waiting: int
    def __init__(self, used: _Optional[_Union[_types_pb2.Resources, _Mapping]] = ..., tasks: _Optional[_Iterable[_Union[TaskUsage, _Mapping]]] = ..., seq: _Optional[int] = ..., prepare_per_s: _Optional[float] = ..., prepare_p99_ms: _Optional[float] = ..., prepare_waiting: _Optional[int] = ...) -> None: ...

class TaskStatus(_message.Message):
    __slots__ = ("task_id", "attempt", "state", "exit_code", "reason", "start_time", "finish_time")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    state: _types_pb2.TaskState
    exit_code: int
    reason: str
    start_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., state: _Optional[_Union[_types_pb2.TaskState, str]] = ..., exit_code: _Optional[int] = ..., reason: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LogData(_message.Message):
    __slots__ = ("request_id", "data", "offset", "error", "mark_offsets", "mark_times")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    MARK_OFFSETS_FIELD_NUMBER: _ClassVar[int]
    MARK_TIMES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    data: bytes
    offset: int
    error: str
    mark_offsets: _containers.RepeatedScalarFieldContainer[int]
    mark_times: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, request_id: _Optional[str] = ..., data: _Optional[bytes] = ..., offset: _Optional[int] = ..., error: _Optional[str] = ..., mark_offsets: _Optional[_Iterable[int]] = ..., mark_times: _Optional[_Iterable[float]] = ...) -> None: ...

class Registered(_message.Message):
    __slots__ = ("node_id", "heartbeat_interval", "lease", "kill_grace", "cluster_id")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    KILL_GRACE_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    heartbeat_interval: _duration_pb2.Duration
    lease: _duration_pb2.Duration
    kill_grace: _duration_pb2.Duration
    cluster_id: str
    def __init__(self, node_id: _Optional[str] = ..., heartbeat_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., lease: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., kill_grace: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., cluster_id: _Optional[str] = ...) -> None: ...

class RunAs(_message.Message):
    __slots__ = ("uid", "refused")
    UID_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    uid: int
    refused: str
    def __init__(self, uid: _Optional[int] = ..., refused: _Optional[str] = ...) -> None: ...

class StartTask(_message.Message):
    __slots__ = ("task", "run_as")
    TASK_FIELD_NUMBER: _ClassVar[int]
    RUN_AS_FIELD_NUMBER: _ClassVar[int]
    task: _types_pb2.TaskExecution
    run_as: RunAs
    def __init__(self, task: _Optional[_Union[_types_pb2.TaskExecution, _Mapping]] = ..., run_as: _Optional[_Union[RunAs, _Mapping]] = ...) -> None: ...

class StopTask(_message.Message):
    __slots__ = ("task_id", "attempt", "grace_period", "state", "reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    GRACE_PERIOD_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    grace_period: _duration_pb2.Duration
    state: _types_pb2.TaskState
    reason: str
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., grace_period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., state: _Optional[_Union[_types_pb2.TaskState, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class StatusAck(_message.Message):
    __slots__ = ("task_id", "attempt", "state")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    attempt: int
    state: _types_pb2.TaskState
    def __init__(self, task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., state: _Optional[_Union[_types_pb2.TaskState, str]] = ...) -> None: ...

class ReadLogs(_message.Message):
    __slots__ = ("request_id", "task_id", "offset", "max_bytes")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    task_id: str
    offset: int
    max_bytes: int
    def __init__(self, request_id: _Optional[str] = ..., task_id: _Optional[str] = ..., offset: _Optional[int] = ..., max_bytes: _Optional[int] = ...) -> None: ...
