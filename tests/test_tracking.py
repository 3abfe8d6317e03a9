"""Where runs go on a Databricks tracking server: the default experiment is the authenticated user's home path.

The workspace is a local HTTP server answering the one request databricks-sdk makes (SCIM `Me`), so the real SDK
resolves the user; nothing of MLflow is replaced."""

import http.server
import json
import os
import threading

import pytest

from pipelines.settings import ConfigError, MlflowConfig
from pipelines.tracking import databricks_user, experiment_name


@pytest.fixture
def no_databricks_credentials(tmp_path, monkeypatch):
    """An environment where databricks-sdk finds no credentials: none in the variables, no ~/.databrickscfg."""
    for name in [name for name in os.environ if name.startswith("DATABRICKS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    databricks_user.cache_clear()
    yield
    databricks_user.cache_clear()


@pytest.fixture
def workspace(no_databricks_credentials, monkeypatch):
    """A workspace whose token belongs to ada@example.com, reached through DATABRICKS_HOST / DATABRICKS_TOKEN."""

    class Workspace(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the handler's required name)
            if self.path.startswith("/api/2.0/preview/scim/v2/Me") and self.headers["Authorization"] == "Bearer t0k":
                self._answer(200, {"userName": "ada@example.com", "id": "42"})
            else:
                self._answer(404, {"error_code": "NOT_FOUND", "message": self.path})

        def _answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Workspace)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("DATABRICKS_HOST", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.setenv("DATABRICKS_TOKEN", "t0k")
    yield
    server.shutdown()


def test_the_default_experiment_on_databricks_is_the_current_users_home(workspace):
    assert experiment_name(MlflowConfig("databricks", experiment=None)) == "/Users/ada@example.com/dataprep"


def test_a_configured_experiment_is_used_as_is_without_asking_the_workspace(no_databricks_credentials):
    assert experiment_name(MlflowConfig("databricks", experiment="/Shared/llm")) == "/Shared/llm"


def test_an_unknown_user_is_a_config_error_that_asks_for_the_experiment(no_databricks_credentials):
    with pytest.raises(ConfigError) as error:
        experiment_name(MlflowConfig("databricks", experiment=None))
    message = str(error.value)
    assert message.startswith("mlflow.experiment: the default /Users/<current user>/dataprep needs the workspace's")
    assert message.endswith("set mlflow.experiment to a workspace path such as /Shared/dataprep")
    with pytest.raises(ConfigError, match="keeps its credentials in a secret scope"):
        experiment_name(MlflowConfig("databricks://scope:prefix", experiment=None))
