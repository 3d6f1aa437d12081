"""The key layout under the store prefix (DESIGN.md, "Data model")."""

TEMPLATES = "templates/"
TASKS = "tasks/"
NODES = "nodes/"
USERS = "users/"
CRON = "cron/"
IDEMPOTENCY = "idem/"
MEMBERS = "members/"
REQUESTS = "requests/"
TOKENS = "tokens/"
AUDIT = "audit/"
CLUSTER_ID = "cluster_id"


def template(template_id: str) -> str:
    return TEMPLATES + template_id


def task(task_id: str) -> str:
    return TASKS + task_id


def node(node_id: str) -> str:
    return NODES + node_id


def user(user_id: str) -> str:
    return USERS + user_id


def idempotency(user_id: str, key: str) -> str:
    return f"{IDEMPOTENCY}{user_id}/{key}"


def template_name(name: str) -> str:
    """Name index: makes names unique through create-if-absent."""
    return f"names/template/{name}"


def token(token_id: str) -> str:
    return TOKENS + token_id
