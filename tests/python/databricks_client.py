"""Drive a real Databricks client against the gateway, for tests/e2e_databricks_sdk.rs.

Reads one JSON spec on stdin, prints one JSON result on stdout (the last line), exits 0 unless
the script itself is broken. Spec:

    {"client": "sdk" | "mlflow" | "sdk_parse" | "sdk_raw",
     "host": "http://127.0.0.1:PORT",        # the gateway
     "token": "<IdP JWT>",                    # the caller's token (a PAT as far as the SDK knows)
     "endpoint": "<serving endpoint name>",
     "inputs": <any JSON>,                    # sent as {"inputs": ...}
     "query": {<keyword arguments>},          # sdk: serving_endpoints.query(endpoint, **query)
                                              #   instead of inputs= (messages and
                                              #   dataframe_split become the SDK's classes)
     "body": "<text>",                        # sdk_raw: the request body as is
     "retry_timeout_seconds": 5}              # SDK only

"sdk_raw" posts `body` verbatim (application/json) through the SDK's own API client
(`ApiClient.do(..., data=...)`): for bodies the SDK's typed `query` cannot produce (NaN,
duplicate keys, malformed JSON, oversized).

"sdk_parse" sends one POST with `requests` and turns the answer into an exception with the
SDK's own error parser (`databricks.sdk.errors.parser._Parser`, what the API client uses), without
the SDK's retry loop: for answers the SDK would retry for a long time (429 with Retry-After 10).

{"batch": [spec, ...]} runs each spec in turn and prints the list of their results.

Result: {"ok": true, "response": <the client's answer as a dict>, "elapsed": seconds,
"warnings": [log messages at WARNING or above]} or {"ok": false, "exception": <class name>,
"classes": [<its class hierarchy>], "cause": <same, for the exception's __cause__>, "message",
"error_code", "status", "request_id": <get_error_details().request_info.request_id>,
"elapsed", "warnings"}.
"""

import json
import logging
import os
import sys
import time


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(f"{record.name}: {record.getMessage()}")


def describe(e):
    if e is None:
        return None
    d = {
        "exception": type(e).__name__,
        "classes": [c.__name__ for c in type(e).__mro__],
        "message": str(e),
        "error_code": getattr(e, "error_code", None),
        "status": None,
        "request_id": None,
    }
    details = getattr(e, "get_error_details", None)
    if details is not None:
        info = details().request_info
        d["request_id"] = info.request_id if info is not None else None
    for attr in ("status_code", "http_status_code"):
        if getattr(e, attr, None) is not None:
            d["status"] = getattr(e, attr)
    # MLflow: the gateway's JSON error is in the message; keep its error code.
    if d["error_code"] is None and hasattr(e, "json_kwargs"):
        d["error_code"] = getattr(e, "error_code", None)
    cause = e.__cause__ if e.__cause__ is not e else None
    d["cause"] = describe(cause) if cause is not None else None
    return d


def workspace_client(spec):
    from databricks.sdk import WorkspaceClient
    from databricks.sdk.core import Config

    cfg = Config(
        host=spec["host"],
        token=spec["token"],
        auth_type="pat",
        retry_timeout_seconds=spec.get("retry_timeout_seconds", 5),
    )
    return WorkspaceClient(config=cfg)


def run_sdk(spec):
    w = workspace_client(spec)
    r = w.serving_endpoints.query(spec["endpoint"], **query_arguments(spec))
    return r.as_dict()


def query_arguments(spec):
    from databricks.sdk.service.serving import ChatMessage, ChatMessageRole, DataframeSplitInput

    q = dict(spec.get("query") or {"inputs": spec["inputs"]})
    if "messages" in q:
        q["messages"] = [
            ChatMessage(role=ChatMessageRole(m["role"]), content=m.get("content"))
            for m in q["messages"]
        ]
    if "dataframe_split" in q:
        q["dataframe_split"] = DataframeSplitInput(**q["dataframe_split"])
    return q


def run_sdk_raw(spec):
    w = workspace_client(spec)
    return w.api_client.do(
        "POST",
        f"/serving-endpoints/{spec['endpoint']}/invocations",
        headers={"Accept": "application/json", "Content-Type": "application/json"},
        data=spec["body"].encode(),
    )


def run_sdk_parse(spec):
    import requests
    from databricks.sdk.errors.parser import _Parser

    r = requests.post(
        f"{spec['host']}/serving-endpoints/{spec['endpoint']}/invocations",
        json={"inputs": spec["inputs"]},
        headers={"Authorization": f"Bearer {spec['token']}"},
        timeout=20,
    )
    err = _Parser().get_api_error(r)
    if err is not None:
        raise err
    return r.json()


def run_mlflow(spec):
    os.environ["DATABRICKS_HOST"] = spec["host"]
    os.environ["DATABRICKS_TOKEN"] = spec["token"]
    # One attempt, bounded: the tests assert what the gateway answers, not MLflow's backoff.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("MLFLOW_DEPLOYMENT_PREDICT_TOTAL_TIMEOUT", "20")
    import mlflow.deployments

    client = mlflow.deployments.get_deploy_client("databricks")
    r = client.predict(endpoint=spec["endpoint"], inputs={"inputs": spec["inputs"]})
    return dict(r)


def main():
    spec = json.load(sys.stdin)
    if "batch" in spec:
        # One interpreter for many calls: {"batch": [spec, ...]} -> [result, ...].
        print(json.dumps([run_one(s) for s in spec["batch"]], default=str))
    else:
        print(json.dumps(run_one(spec), default=str))


def run_one(spec):
    collect = Collect()
    logging.getLogger().addHandler(collect)
    logging.getLogger().setLevel(logging.INFO)
    start = time.monotonic()
    out = {}
    try:
        run = {
            "sdk": run_sdk,
            "mlflow": run_mlflow,
            "sdk_parse": run_sdk_parse,
            "sdk_raw": run_sdk_raw,
        }[spec["client"]]
        out = {"ok": True, "response": run(spec)}
    except Exception as e:  # the exception is the result
        out = {"ok": False, **describe(e)}
    out["elapsed"] = time.monotonic() - start
    out["warnings"] = collect.messages
    logging.getLogger().removeHandler(collect)
    return out


if __name__ == "__main__":
    main()
