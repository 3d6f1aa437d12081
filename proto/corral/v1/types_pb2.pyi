import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_STATE_UNSPECIFIED: _ClassVar[TaskState]
    PENDING: _ClassVar[TaskState]
    ASSIGNED: _ClassVar[TaskState]
    RUNNING: _ClassVar[TaskState]
    SUCCEEDED: _ClassVar[TaskState]
    FAILED: _ClassVar[TaskState]
    OOM_KILLED: _ClassVar[TaskState]
    TIMED_OUT: _ClassVar[TaskState]
    STOPPED: _ClassVar[TaskState]
    LOST: _ClassVar[TaskState]
    PREEMPTED: _ClassVar[TaskState]
    SKIPPED: _ClassVar[TaskState]

class Driver(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DRIVER_UNSPECIFIED: _ClassVar[Driver]
    PROCESS: _ClassVar[Driver]
    DOCKER: _ClassVar[Driver]

class NodeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NODE_STATE_UNSPECIFIED: _ClassVar[NodeState]
    READY: _ClassVar[NodeState]
    DOWN: _ClassVar[NodeState]
    DRAINING: _ClassVar[NodeState]
    CORDONED: _ClassVar[NodeState]

class ConcurrencyPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONCURRENCY_POLICY_UNSPECIFIED: _ClassVar[ConcurrencyPolicy]
    ALLOW: _ClassVar[ConcurrencyPolicy]
    FORBID: _ClassVar[ConcurrencyPolicy]
    REPLACE: _ClassVar[ConcurrencyPolicy]

class MisfirePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MISFIRE_POLICY_UNSPECIFIED: _ClassVar[MisfirePolicy]
    SKIP: _ClassVar[MisfirePolicy]
    RUN_ONCE: _ClassVar[MisfirePolicy]
    RUN_ALL: _ClassVar[MisfirePolicy]

class PullPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PULL_POLICY_UNSPECIFIED: _ClassVar[PullPolicy]
    IF_NOT_PRESENT: _ClassVar[PullPolicy]
    ALWAYS: _ClassVar[PullPolicy]
    NEVER: _ClassVar[PullPolicy]
TASK_STATE_UNSPECIFIED: TaskState
PENDING: TaskState
ASSIGNED: TaskState
RUNNING: TaskState
SUCCEEDED: TaskState
FAILED: TaskState
OOM_KILLED: TaskState
TIMED_OUT: TaskState
STOPPED: TaskState
LOST: TaskState
PREEMPTED: TaskState
SKIPPED: TaskState
DRIVER_UNSPECIFIED: Driver
PROCESS: Driver
DOCKER: Driver
NODE_STATE_UNSPECIFIED: NodeState
READY: NodeState
DOWN: NodeState
DRAINING: NodeState
CORDONED: NodeState
CONCURRENCY_POLICY_UNSPECIFIED: ConcurrencyPolicy
ALLOW: ConcurrencyPolicy
FORBID: ConcurrencyPolicy
REPLACE: ConcurrencyPolicy
MISFIRE_POLICY_UNSPECIFIED: MisfirePolicy
SKIP: MisfirePolicy
RUN_ONCE: MisfirePolicy
RUN_ALL: MisfirePolicy
PULL_POLICY_UNSPECIFIED: PullPolicy
IF_NOT_PRESENT: PullPolicy
ALWAYS: PullPolicy
NEVER: PullPolicy

class Constraint(_message.Message):
    __slots__ = ("key", "op", "values")
    KEY_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    key: str
    op: str
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key: _Optional[str] = ..., op: _Optional[str] = ..., values: _Optional[_Iterable[str]] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("max_attempts", "retry_on_failure")
    MAX_ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    RETRY_ON_FAILURE_FIELD_NUMBER: _ClassVar[int]
    max_attempts: int
    retry_on_failure: bool
    def __init__(self, max_attempts: _Optional[int] = ..., retry_on_failure: _Optional[bool] = ...) -> None: ...

class TaskTemplate(_message.Message):
    __slots__ = ("template_id", "name", "owner", "cpu_request", "cpu_limit", "mem_request", "mem_limit", "pids_limit", "driver", "image", "run_script", "args", "env", "user", "working_dir", "timeout", "cron_schedule", "time_zone", "concurrency_policy", "misfire_policy", "starting_deadline", "suspended", "history_limit", "retry", "priority", "constraints", "labels", "ordering_key", "pull_policy", "network", "read_only_rootfs", "create_time", "update_time", "distinct_nodes", "gang", "gang_size", "placement", "next_fires", "suspend_reason", "secret_env", "on_disconnect", "on_lost", "max_skip_records")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    CPU_REQUEST_FIELD_NUMBER: _ClassVar[int]
    CPU_LIMIT_FIELD_NUMBER: _ClassVar[int]
    MEM_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MEM_LIMIT_FIELD_NUMBER: _ClassVar[int]
    PIDS_LIMIT_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    RUN_SCRIPT_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    WORKING_DIR_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    CRON_SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    CONCURRENCY_POLICY_FIELD_NUMBER: _ClassVar[int]
    MISFIRE_POLICY_FIELD_NUMBER: _ClassVar[int]
    STARTING_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    SUSPENDED_FIELD_NUMBER: _ClassVar[int]
    HISTORY_LIMIT_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    ORDERING_KEY_FIELD_NUMBER: _ClassVar[int]
    PULL_POLICY_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    READ_ONLY_ROOTFS_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DISTINCT_NODES_FIELD_NUMBER: _ClassVar[int]
    GANG_FIELD_NUMBER: _ClassVar[int]
    GANG_SIZE_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIRES_FIELD_NUMBER: _ClassVar[int]
    SUSPEND_REASON_FIELD_NUMBER: _ClassVar[int]
    SECRET_ENV_FIELD_NUMBER: _ClassVar[int]
    ON_DISCONNECT_FIELD_NUMBER: _ClassVar[int]
    ON_LOST_FIELD_NUMBER: _ClassVar[int]
    MAX_SKIP_RECORDS_FIELD_NUMBER: _ClassVar[int]
    template_id: str
    name: str
    owner: str
    cpu_request: int
    cpu_limit: int
    mem_request: int
    mem_limit: int
    pids_limit: int
    driver: Driver
    image: str
    run_script: str
    args: _containers.RepeatedScalarFieldContainer[str]
    env: _containers.ScalarMap[str, str]
    user: str
    working_dir: str
    timeout: _duration_pb2.Duration
    cron_schedule: str
    time_zone: str
    concurrency_policy: ConcurrencyPolicy
    misfire_policy: MisfirePolicy
    starting_deadline: _duration_pb2.Duration
    suspended: bool
    history_limit: int
    retry: RetryPolicy
    priority: int
    constraints: _containers.RepeatedCompositeFieldContainer[Constraint]
    labels: _containers.ScalarMap[str, str]
    ordering_key: str
    pull_policy: PullPolicy
    network: str
    read_only_rootfs: bool
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    distinct_nodes: bool
    gang: str
    gang_size: int
    placement: str
    next_fires: _containers.RepeatedCompositeFieldContainer[_timestamp_pb2.Timestamp]
    suspend_reason: str
    secret_env: _containers.RepeatedScalarFieldContainer[str]
    on_disconnect: str
    on_lost: str
    max_skip_records: int
    def __init__(self, template_id: _Optional[str] = ..., name: _Optional[str] = ..., owner: _Optional[str] = ..., cpu_request: _Optional[int] = ..., cpu_limit: _Optional[int] = ..., mem_request: _Optional[int] = ..., mem_limit: _Optional[int] = ..., pids_limit: _Optional[int] = ..., driver: _Optional[_Union[Driver, str]] = ..., image: _Optional[str] = ..., run_script: _Optional[str] = ..., args: _Optional[_Iterable[str]] = ..., env: _Optional[_Mapping[str, str]] = ..., user: _Optional[str] = ..., working_dir: _Optional[str] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., cron_schedule: _Optional[str] = ..., time_zone: _Optional[str] = ..., concurrency_policy: _Optional[_Union[ConcurrencyPolicy, str]] = ..., misfire_policy: _Optional[_Union[MisfirePolicy, str]] = ..., starting_deadline: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., suspended: _Optional[bool] = ..., history_limit: _Optional[int] = ..., retry: _Optional[_Union[RetryPolicy, _Mapping]] = ..., priority: _Optional[int] = ..., constraints: _Optional[_Iterable[_Union[Constraint, _Mapping]]] = ..., labels: _Optional[_Mapping[str, str]] = ..., ordering_key: _Optional[str] = ..., pull_policy: _Optional[_Union[PullPolicy, str]] = ..., network: _Optional[str] = ..., read_only_rootfs: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., distinct_nodes: _Optional[bool] = ..., gang: _Optional[str] = ..., gang_size: _Optional[int] = ..., placement: _Optional[str] = ..., next_fires: _Optional[_Iterable[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]]] = ..., suspend_reason: _Optional[str] = ..., secret_env: _Optional[_Iterable[str]] = ..., on_disconnect: _Optional[str] = ..., on_lost: _Optional[str] = ..., max_skip_records: _Optional[int] = ...) -> None: ...

class AttemptRecord(_message.Message):
    __slots__ = ("attempt", "node_id", "state", "exit_code", "reason", "start_time", "finish_time")
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    node_id: str
    state: TaskState
    exit_code: int
    reason: str
    start_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    def __init__(self, attempt: _Optional[int] = ..., node_id: _Optional[str] = ..., state: _Optional[_Union[TaskState, str]] = ..., exit_code: _Optional[int] = ..., reason: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TaskExecution(_message.Message):
    __slots__ = ("task_id", "template_id", "user_id", "node_id", "state", "exit_code", "reason", "attempt", "submit_time", "due_time", "start_time", "finish_time", "expiry_time", "name", "spec", "idempotency_key", "history", "stop_requested", "stop_grace", "range_end", "stop_as")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    SUBMIT_TIME_FIELD_NUMBER: _ClassVar[int]
    DUE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    FINISH_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRY_TIME_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    STOP_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    STOP_GRACE_FIELD_NUMBER: _ClassVar[int]
    RANGE_END_FIELD_NUMBER: _ClassVar[int]
    STOP_AS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    template_id: str
    user_id: str
    node_id: str
    state: TaskState
    exit_code: int
    reason: str
    attempt: int
    submit_time: _timestamp_pb2.Timestamp
    due_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    finish_time: _timestamp_pb2.Timestamp
    expiry_time: _timestamp_pb2.Timestamp
    name: str
    spec: TaskTemplate
    idempotency_key: str
    history: _containers.RepeatedCompositeFieldContainer[AttemptRecord]
    stop_requested: bool
    stop_grace: _duration_pb2.Duration
    range_end: _timestamp_pb2.Timestamp
    stop_as: TaskState
    def __init__(self, task_id: _Optional[str] = ..., template_id: _Optional[str] = ..., user_id: _Optional[str] = ..., node_id: _Optional[str] = ..., state: _Optional[_Union[TaskState, str]] = ..., exit_code: _Optional[int] = ..., reason: _Optional[str] = ..., attempt: _Optional[int] = ..., submit_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., due_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expiry_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., name: _Optional[str] = ..., spec: _Optional[_Union[TaskTemplate, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., history: _Optional[_Iterable[_Union[AttemptRecord, _Mapping]]] = ..., stop_requested: _Optional[bool] = ..., stop_grace: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., range_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., stop_as: _Optional[_Union[TaskState, str]] = ...) -> None: ...

class Resources(_message.Message):
    __slots__ = ("cpu", "memory", "pids")
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    PIDS_FIELD_NUMBER: _ClassVar[int]
    cpu: int
    memory: int
    pids: int
    def __init__(self, cpu: _Optional[int] = ..., memory: _Optional[int] = ..., pids: _Optional[int] = ...) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("node_id", "address", "capacity", "allocatable", "labels", "drivers", "state", "last_heartbeat", "version", "allocated", "used", "running_tasks", "driver_health", "registered_time")
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
    ALLOCATABLE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    DRIVERS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALLOCATED_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    RUNNING_TASKS_FIELD_NUMBER: _ClassVar[int]
    DRIVER_HEALTH_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_TIME_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    address: str
    capacity: Resources
    allocatable: Resources
    labels: _containers.ScalarMap[str, str]
    drivers: _containers.RepeatedScalarFieldContainer[str]
    state: NodeState
    last_heartbeat: _timestamp_pb2.Timestamp
    version: str
    allocated: Resources
    used: Resources
    running_tasks: int
    driver_health: _containers.ScalarMap[str, str]
    registered_time: _timestamp_pb2.Timestamp
    def __init__(self, node_id: _Optional[str] = ..., address: _Optional[str] = ..., capacity: _Optional[_Union[Resources, _Mapping]] = ..., allocatable: _Optional[_Union[Resources, _Mapping]] = ..., labels: _Optional[_Mapping[str, str]] = ..., drivers: _Optional[_Iterable[str]] = ..., state: _Optional[_Union[NodeState, str]] = ..., last_heartbeat: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[str] = ..., allocated: _Optional[_Union[Resources, _Mapping]] = ..., used: _Optional[_Union[Resources, _Mapping]] = ..., running_tasks: _Optional[int] = ..., driver_health: _Optional[_Mapping[str, str]] = ..., registered_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CronState(_message.Message):
    __slots__ = ("last_scheduled", "fired", "skipped", "last_skip_reason")
    LAST_SCHEDULED_FIELD_NUMBER: _ClassVar[int]
    FIRED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    LAST_SKIP_REASON_FIELD_NUMBER: _ClassVar[int]
    last_scheduled: int
    fired: int
    skipped: int
    last_skip_reason: str
    def __init__(self, last_scheduled: _Optional[int] = ..., fired: _Optional[int] = ..., skipped: _Optional[int] = ..., last_skip_reason: _Optional[str] = ...) -> None: ...

class Quota(_message.Message):
    __slots__ = ("max_tasks", "max_cpu", "max_memory", "max_submit_rate", "max_stored_records", "max_stored_bytes")
    MAX_TASKS_FIELD_NUMBER: _ClassVar[int]
    MAX_CPU_FIELD_NUMBER: _ClassVar[int]
    MAX_MEMORY_FIELD_NUMBER: _ClassVar[int]
    MAX_SUBMIT_RATE_FIELD_NUMBER: _ClassVar[int]
    MAX_STORED_RECORDS_FIELD_NUMBER: _ClassVar[int]
    MAX_STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    max_tasks: int
    max_cpu: int
    max_memory: int
    max_submit_rate: float
    max_stored_records: int
    max_stored_bytes: int
    def __init__(self, max_tasks: _Optional[int] = ..., max_cpu: _Optional[int] = ..., max_memory: _Optional[int] = ..., max_submit_rate: _Optional[float] = ..., max_stored_records: _Optional[int] = ..., max_stored_bytes: _Optional[int] = ...) -> None: ...

class User(_message.Message):
    __slots__ = ("user_id", "name", "roles", "token_hash", "quota", "create_time", "uid", "permissions")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    TOKEN_HASH_FIELD_NUMBER: _ClassVar[int]
    QUOTA_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    name: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    token_hash: str
    quota: Quota
    create_time: _timestamp_pb2.Timestamp
    uid: int
    permissions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, user_id: _Optional[str] = ..., name: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., token_hash: _Optional[str] = ..., quota: _Optional[_Union[Quota, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., uid: _Optional[int] = ..., permissions: _Optional[_Iterable[str]] = ...) -> None: ...

class Token(_message.Message):
    __slots__ = ("token_id", "user_id", "token_hash", "description", "create_time", "expire_time", "node_id")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_HASH_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    user_id: str
    token_hash: str
    description: str
    create_time: _timestamp_pb2.Timestamp
    expire_time: _timestamp_pb2.Timestamp
    node_id: str
    def __init__(self, token_id: _Optional[str] = ..., user_id: _Optional[str] = ..., token_hash: _Optional[str] = ..., description: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., node_id: _Optional[str] = ...) -> None: ...

class AuditRecord(_message.Message):
    __slots__ = ("time", "who", "what", "target", "result", "detail", "master", "peer")
    TIME_FIELD_NUMBER: _ClassVar[int]
    WHO_FIELD_NUMBER: _ClassVar[int]
    WHAT_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    MASTER_FIELD_NUMBER: _ClassVar[int]
    PEER_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    who: str
    what: str
    target: str
    result: str
    detail: str
    master: str
    peer: str
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., who: _Optional[str] = ..., what: _Optional[str] = ..., target: _Optional[str] = ..., result: _Optional[str] = ..., detail: _Optional[str] = ..., master: _Optional[str] = ..., peer: _Optional[str] = ...) -> None: ...
