import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from corral.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CreateTemplateRequest(_message.Message):
    __slots__ = ("template",)
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    template: _types_pb2.TaskTemplate
    def __init__(self, template: _Optional[_Union[_types_pb2.TaskTemplate, _Mapping]] = ...) -> None: ...

class GetTemplateRequest(_message.Message):
    __slots__ = ("template_id", "consistent")
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    CONSISTENT_FIELD_NUMBER: _ClassVar[int]
    template_id: str
    consistent: bool
    def __init__(self, template_id: _Optional[str] = ..., consistent: _Optional[bool] = ...) -> None: ...

class UpdateTemplateRequest(_message.Message):
    __slots__ = ("template", "update_mask")
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    template: _types_pb2.TaskTemplate
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, template: _Optional[_Union[_types_pb2.TaskTemplate, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class DeleteTemplateRequest(_message.Message):
    __slots__ = ("template_id",)
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    template_id: str
    def __init__(self, template_id: _Optional[str] = ...) -> None: ...

class DeleteTemplateResponse(_message.Message):
    __slots__ = ("template_id",)
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    template_id: str
    def __init__(self, template_id: _Optional[str] = ...) -> None: ...

class ListTemplatesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "consistent")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CONSISTENT_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    consistent: bool
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., consistent: _Optional[bool] = ...) -> None: ...

class PauseTemplateRequest(_message.Message):
    __slots__ = ("template_id",)
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    template_id: str
    def __init__(self, template_id: _Optional[str] = ...) -> None: ...

class ResumeTemplateRequest(_message.Message):
    __slots__ = ("template_id", "run_missed")
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_MISSED_FIELD_NUMBER: _ClassVar[int]
    template_id: str
    run_missed: bool
    def __init__(self, template_id: _Optional[str] = ..., run_missed: _Optional[bool] = ...) -> None: ...

class NextTemplateFiresRequest(_message.Message):
    __slots__ = ("template_id", "count")
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    template_id: str
    count: int
    def __init__(self, template_id: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class NextTemplateFiresResponse(_message.Message):
    __slots__ = ("utc", "local", "time_zone")
    UTC_FIELD_NUMBER: _ClassVar[int]
    LOCAL_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    utc: _containers.RepeatedCompositeFieldContainer[_timestamp_pb2.Timestamp]
    local: _containers.RepeatedScalarFieldContainer[str]
    time_zone: str
    def __init__(self, utc: _Optional[_Iterable[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]]] = ..., local: _Optional[_Iterable[str]] = ..., time_zone: _Optional[str] = ...) -> None: ...

class TemplateHistoryRequest(_message.Message):
    __slots__ = ("template_id", "limit")
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    template_id: str
    limit: int
    def __init__(self, template_id: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class TemplateHistoryResponse(_message.Message):
    __slots__ = ("state", "runs", "last_fire", "last_success", "next_fire")
    STATE_FIELD_NUMBER: _ClassVar[int]
    RUNS_FIELD_NUMBER: _ClassVar[int]
    LAST_FIRE_FIELD_NUMBER: _ClassVar[int]
    LAST_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIRE_FIELD_NUMBER: _ClassVar[int]
    state: _types_pb2.CronState
    runs: _containers.RepeatedCompositeFieldContainer[_types_pb2.TaskExecution]
    last_fire: _timestamp_pb2.Timestamp
    last_success: _timestamp_pb2.Timestamp
    next_fire: _timestamp_pb2.Timestamp
    def __init__(self, state: _Optional[_Union[_types_pb2.CronState, _Mapping]] = ..., runs: _Optional[_Iterable[_Union[_types_pb2.TaskExecution, _Mapping]]] = ..., last_fire: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_success: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_fire: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListTemplatesResponse(_message.Message):
    __slots__ = ("templates", "next_page_token")
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    templates: _containers.RepeatedCompositeFieldContainer[_types_pb2.TaskTemplate]
    next_page_token: str
    def __init__(self, templates: _Optional[_Iterable[_Union[_types_pb2.TaskTemplate, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SubmitTaskRequest(_message.Message):
    __slots__ = ("template_id", "spec", "run_at", "idempotency_key", "name")
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    RUN_AT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    template_id: str
    spec: _types_pb2.TaskTemplate
    run_at: _timestamp_pb2.Timestamp
    idempotency_key: str
    name: str
    def __init__(self, template_id: _Optional[str] = ..., spec: _Optional[_Union[_types_pb2.TaskTemplate, _Mapping]] = ..., run_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class SubmitTasksRequest(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[SubmitTaskRequest]
    def __init__(self, tasks: _Optional[_Iterable[_Union[SubmitTaskRequest, _Mapping]]] = ...) -> None: ...

class SubmitResult(_message.Message):
    __slots__ = ("task_id", "code", "error")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    code: int
    error: str
    def __init__(self, task_id: _Optional[str] = ..., code: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class SubmitTasksResponse(_message.Message):
    __slots__ = ("results", "accepted")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SubmitResult]
    accepted: int
    def __init__(self, results: _Optional[_Iterable[_Union[SubmitResult, _Mapping]]] = ..., accepted: _Optional[int] = ...) -> None: ...

class StopTaskRequest(_message.Message):
    __slots__ = ("task_id", "grace_period")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    GRACE_PERIOD_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    grace_period: _duration_pb2.Duration
    def __init__(self, task_id: _Optional[str] = ..., grace_period: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class GetTaskRequest(_message.Message):
    __slots__ = ("task_id", "consistent")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    CONSISTENT_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    consistent: bool
    def __init__(self, task_id: _Optional[str] = ..., consistent: _Optional[bool] = ...) -> None: ...

class ListTasksRequest(_message.Message):
    __slots__ = ("state", "template_id", "node_id", "page_size", "page_token", "consistent")
    STATE_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CONSISTENT_FIELD_NUMBER: _ClassVar[int]
    state: _types_pb2.TaskState
    template_id: str
    node_id: str
    page_size: int
    page_token: str
    consistent: bool
    def __init__(self, state: _Optional[_Union[_types_pb2.TaskState, str]] = ..., template_id: _Optional[str] = ..., node_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., consistent: _Optional[bool] = ...) -> None: ...

class ListTasksResponse(_message.Message):
    __slots__ = ("tasks", "next_page_token")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[_types_pb2.TaskExecution]
    next_page_token: str
    def __init__(self, tasks: _Optional[_Iterable[_Union[_types_pb2.TaskExecution, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchTasksRequest(_message.Message):
    __slots__ = ("task_id", "template_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    template_id: str
    def __init__(self, task_id: _Optional[str] = ..., template_id: _Optional[str] = ...) -> None: ...

class TaskEvent(_message.Message):
    __slots__ = ("task", "deleted")
    TASK_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    task: _types_pb2.TaskExecution
    deleted: bool
    def __init__(self, task: _Optional[_Union[_types_pb2.TaskExecution, _Mapping]] = ..., deleted: _Optional[bool] = ...) -> None: ...

class TaskLogsRequest(_message.Message):
    __slots__ = ("task_id", "follow", "offset")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    follow: bool
    offset: int
    def __init__(self, task_id: _Optional[str] = ..., follow: _Optional[bool] = ..., offset: _Optional[int] = ...) -> None: ...

class LogChunk(_message.Message):
    __slots__ = ("data", "offset", "mark_offsets", "mark_times")
    DATA_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    MARK_OFFSETS_FIELD_NUMBER: _ClassVar[int]
    MARK_TIMES_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    offset: int
    mark_offsets: _containers.RepeatedScalarFieldContainer[int]
    mark_times: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, data: _Optional[bytes] = ..., offset: _Optional[int] = ..., mark_offsets: _Optional[_Iterable[int]] = ..., mark_times: _Optional[_Iterable[float]] = ...) -> None: ...

class RetryTaskRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ("consistent",)
    CONSISTENT_FIELD_NUMBER: _ClassVar[int]
    consistent: bool
    def __init__(self, consistent: _Optional[bool] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[_types_pb2.NodeInfo]
    def __init__(self, nodes: _Optional[_Iterable[_Union[_types_pb2.NodeInfo, _Mapping]]] = ...) -> None: ...

class GetNodeRequest(_message.Message):
    __slots__ = ("node_id", "consistent")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CONSISTENT_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    consistent: bool
    def __init__(self, node_id: _Optional[str] = ..., consistent: _Optional[bool] = ...) -> None: ...

class CordonNodeRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class UncordonNodeRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class DrainNodeRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class DeleteNodeRequest(_message.Message):
    __slots__ = ("node_id",)
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    def __init__(self, node_id: _Optional[str] = ...) -> None: ...

class DeleteNodeResponse(_message.Message):
    __slots__ = ("node_id", "tokens_revoked")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TOKENS_REVOKED_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    tokens_revoked: int
    def __init__(self, node_id: _Optional[str] = ..., tokens_revoked: _Optional[int] = ...) -> None: ...

class ClusterStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Member(_message.Message):
    __slots__ = ("name", "address", "pid", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    pid: int
    version: str
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., pid: _Optional[int] = ..., version: _Optional[str] = ...) -> None: ...

class EtcdEndpoint(_message.Message):
    __slots__ = ("endpoint", "healthy", "version", "db_size", "is_leader", "error")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DB_SIZE_FIELD_NUMBER: _ClassVar[int]
    IS_LEADER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    healthy: bool
    version: str
    db_size: int
    is_leader: bool
    error: str
    def __init__(self, endpoint: _Optional[str] = ..., healthy: _Optional[bool] = ..., version: _Optional[str] = ..., db_size: _Optional[int] = ..., is_leader: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class ClusterStatusResponse(_message.Message):
    __slots__ = ("leader", "members", "leader_term", "etcd_endpoints", "nodes_by_state", "tasks_by_state", "version", "etcd", "cluster_id")
    class NodesByStateEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class TasksByStateEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    LEADER_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    LEADER_TERM_FIELD_NUMBER: _ClassVar[int]
    ETCD_ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    NODES_BY_STATE_FIELD_NUMBER: _ClassVar[int]
    TASKS_BY_STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ETCD_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    leader: Member
    members: _containers.RepeatedCompositeFieldContainer[Member]
    leader_term: int
    etcd_endpoints: _containers.RepeatedScalarFieldContainer[str]
    nodes_by_state: _containers.ScalarMap[str, int]
    tasks_by_state: _containers.ScalarMap[str, int]
    version: str
    etcd: _containers.RepeatedCompositeFieldContainer[EtcdEndpoint]
    cluster_id: str
    def __init__(self, leader: _Optional[_Union[Member, _Mapping]] = ..., members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ..., leader_term: _Optional[int] = ..., etcd_endpoints: _Optional[_Iterable[str]] = ..., nodes_by_state: _Optional[_Mapping[str, int]] = ..., tasks_by_state: _Optional[_Mapping[str, int]] = ..., version: _Optional[str] = ..., etcd: _Optional[_Iterable[_Union[EtcdEndpoint, _Mapping]]] = ..., cluster_id: _Optional[str] = ...) -> None: ...

class CreateUserRequest(_message.Message):
    __slots__ = ("user_id", "role", "name", "max_tasks", "max_cpu", "max_memory", "max_submit_rate", "permissions", "max_stored_records", "max_stored_bytes")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MAX_TASKS_FIELD_NUMBER: _ClassVar[int]
    MAX_CPU_FIELD_NUMBER: _ClassVar[int]
    MAX_MEMORY_FIELD_NUMBER: _ClassVar[int]
    MAX_SUBMIT_RATE_FIELD_NUMBER: _ClassVar[int]
    PERMISSIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_STORED_RECORDS_FIELD_NUMBER: _ClassVar[int]
    MAX_STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    role: str
    name: str
    max_tasks: int
    max_cpu: int
    max_memory: int
    max_submit_rate: float
    permissions: _containers.RepeatedScalarFieldContainer[str]
    max_stored_records: int
    max_stored_bytes: int
    def __init__(self, user_id: _Optional[str] = ..., role: _Optional[str] = ..., name: _Optional[str] = ..., max_tasks: _Optional[int] = ..., max_cpu: _Optional[int] = ..., max_memory: _Optional[int] = ..., max_submit_rate: _Optional[float] = ..., permissions: _Optional[_Iterable[str]] = ..., max_stored_records: _Optional[int] = ..., max_stored_bytes: _Optional[int] = ...) -> None: ...

class UpdateUserRequest(_message.Message):
    __slots__ = ("user_id", "grant", "revoke", "max_tasks", "max_cpu", "max_memory", "max_submit_rate", "max_stored_records", "max_stored_bytes")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    GRANT_FIELD_NUMBER: _ClassVar[int]
    REVOKE_FIELD_NUMBER: _ClassVar[int]
    MAX_TASKS_FIELD_NUMBER: _ClassVar[int]
    MAX_CPU_FIELD_NUMBER: _ClassVar[int]
    MAX_MEMORY_FIELD_NUMBER: _ClassVar[int]
    MAX_SUBMIT_RATE_FIELD_NUMBER: _ClassVar[int]
    MAX_STORED_RECORDS_FIELD_NUMBER: _ClassVar[int]
    MAX_STORED_BYTES_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    grant: _containers.RepeatedScalarFieldContainer[str]
    revoke: _containers.RepeatedScalarFieldContainer[str]
    max_tasks: int
    max_cpu: int
    max_memory: int
    max_submit_rate: float
    max_stored_records: int
    max_stored_bytes: int
    def __init__(self, user_id: _Optional[str] = ..., grant: _Optional[_Iterable[str]] = ..., revoke: _Optional[_Iterable[str]] = ..., max_tasks: _Optional[int] = ..., max_cpu: _Optional[int] = ..., max_memory: _Optional[int] = ..., max_submit_rate: _Optional[float] = ..., max_stored_records: _Optional[int] = ..., max_stored_bytes: _Optional[int] = ...) -> None: ...

class CreateUserResponse(_message.Message):
    __slots__ = ("user", "token", "secret")
    USER_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    user: _types_pb2.User
    token: _types_pb2.Token
    secret: str
    def __init__(self, user: _Optional[_Union[_types_pb2.User, _Mapping]] = ..., token: _Optional[_Union[_types_pb2.Token, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class ListUsersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListUsersResponse(_message.Message):
    __slots__ = ("users",)
    USERS_FIELD_NUMBER: _ClassVar[int]
    users: _containers.RepeatedCompositeFieldContainer[_types_pb2.User]
    def __init__(self, users: _Optional[_Iterable[_Union[_types_pb2.User, _Mapping]]] = ...) -> None: ...

class DeleteUserRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class DeleteUserResponse(_message.Message):
    __slots__ = ("tokens_revoked",)
    TOKENS_REVOKED_FIELD_NUMBER: _ClassVar[int]
    tokens_revoked: int
    def __init__(self, tokens_revoked: _Optional[int] = ...) -> None: ...

class CreateTokenRequest(_message.Message):
    __slots__ = ("user_id", "description", "ttl", "node_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    description: str
    ttl: _duration_pb2.Duration
    node_id: str
    def __init__(self, user_id: _Optional[str] = ..., description: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., node_id: _Optional[str] = ...) -> None: ...

class CreateTokenResponse(_message.Message):
    __slots__ = ("token", "secret")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    token: _types_pb2.Token
    secret: str
    def __init__(self, token: _Optional[_Union[_types_pb2.Token, _Mapping]] = ..., secret: _Optional[str] = ...) -> None: ...

class RevokeTokenRequest(_message.Message):
    __slots__ = ("token_id",)
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    token_id: str
    def __init__(self, token_id: _Optional[str] = ...) -> None: ...

class RevokeTokenResponse(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: _types_pb2.Token
    def __init__(self, token: _Optional[_Union[_types_pb2.Token, _Mapping]] = ...) -> None: ...

class ListTokensRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class ListTokensResponse(_message.Message):
    __slots__ = ("tokens",)
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedCompositeFieldContainer[_types_pb2.Token]
    def __init__(self, tokens: _Optional[_Iterable[_Union[_types_pb2.Token, _Mapping]]] = ...) -> None: ...

class ListAuditRequest(_message.Message):
    __slots__ = ("limit", "who", "target")
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    WHO_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    limit: int
    who: str
    target: str
    def __init__(self, limit: _Optional[int] = ..., who: _Optional[str] = ..., target: _Optional[str] = ...) -> None: ...

class ListAuditResponse(_message.Message):
    __slots__ = ("records",)
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    records: _containers.RepeatedCompositeFieldContainer[_types_pb2.AuditRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[_types_pb2.AuditRecord, _Mapping]]] = ...) -> None: ...
