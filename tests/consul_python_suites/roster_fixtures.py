"""pytest plugin: py-consul's own fixtures, pointed at a running roster.

py-consul's conftest.py starts a Consul container per test (through Docker)
and hands its port on as the fixtures ``consul_instance``,
``acl_consul_instance`` and ``consul_port``. This plugin defines the same
fixtures over the rosters that ``tests/consul_python_suites.rs`` started,
so the library's test files run unchanged. pytest is run with
``--confcutdir`` set to the suite's ``tests/`` directory, so their root
conftest.py (the Docker one) is never imported and these fixtures are the
only ones by those names; ``tests/conftest.py`` (``consul_obj``,
``acl_consul``) builds on them as it does on Consul.

It also deselects the tests listed in ROSTER_OUT_OF_SCOPE, by exact node
id: pytest's own ``--deselect`` takes prefixes, so listing ``test_agent_checks``
would also drop ``test_agent_checks_service_id``. A listed id the suite does
not have stops the run (the list must not go stale).

Environment (set by the Rust test):
  ROSTER_OUT_OF_SCOPE    tests/consul_python_suites/out_of_scope.txt
  ROSTER_HTTP_PORT       a roster with ACLs off
  ROSTER_ACL_HTTP_PORT   a roster with ACLs on, default deny
  ROSTER_ACL_TOKEN       that roster's management token
  ROSTER_CONSUL_VERSION  the Consul version the suite's version checks see

Each Consul container is new, so every test starts from an empty agent;
each roster serves the whole run, so before each test the fixture
deregisters every service (which removes every check with it: roster has
no node-level checks) and checks that nothing is left.
"""

from __future__ import annotations

import collections
import os

import pytest
import requests

# The suite's own shape for an instance (their conftest.py's namedtuple).
ConsulInstance = collections.namedtuple("ConsulInstance", ["container", "port", "version"])

# Bounds every reset request: a hung roster fails the test instead.
REQUEST_TIMEOUT = 10


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set: run this suite through `cargo test --test consul_python_suites`")
    return value


def _reset(port: int, token: str | None) -> None:
    """Deregisters everything roster holds, as a fresh Consul would start."""
    base = f"http://127.0.0.1:{port}/v1/"
    headers = {"X-Consul-Token": token} if token else {}
    services = requests.get(base + "agent/services", headers=headers, timeout=REQUEST_TIMEOUT)
    services.raise_for_status()
    for service_id in services.json():
        response = requests.put(
            base + f"agent/service/deregister/{service_id}", headers=headers, timeout=REQUEST_TIMEOUT
        )
        response.raise_for_status()
    left = requests.get(base + "agent/checks", headers=headers, timeout=REQUEST_TIMEOUT)
    left.raise_for_status()
    assert left.json() == {}, f"checks left after deregistering every service: {left.json()}"


def _instance(port_variable: str, token: str | None) -> ConsulInstance:
    port = int(_env(port_variable))
    _reset(port, token)
    return ConsulInstance(container=None, port=port, version=_env("ROSTER_CONSUL_VERSION"))


def _out_of_scope() -> set[str]:
    """The listed node ids (``id # reason`` lines; ``#`` starts a comment line)."""
    with open(_env("ROSTER_OUT_OF_SCOPE"), encoding="utf-8") as listing:
        lines = [line.strip() for line in listing]
    return {line.split(" # ", 1)[0].strip() for line in lines if line and not line.startswith("#")}


def pytest_collection_modifyitems(config, items):
    listed = _out_of_scope()
    stale = listed - {item.nodeid for item in items}
    if stale:
        raise pytest.UsageError("out_of_scope.txt lists tests the suite does not have: " + ", ".join(sorted(stale)))
    deselected = [item for item in items if item.nodeid in listed]
    items[:] = [item for item in items if item.nodeid not in listed]
    config.hook.pytest_deselected(items=deselected)


@pytest.fixture(scope="session", autouse=True)
def _unset_consul_token():
    # As their conftest.py: the library would send an outer CONSUL_HTTP_TOKEN.
    os.environ.pop("CONSUL_HTTP_TOKEN", None)


@pytest.fixture
def consul_instance():
    yield _instance("ROSTER_HTTP_PORT", None)


@pytest.fixture
def acl_consul_instance():
    token = _env("ROSTER_ACL_TOKEN")
    yield _instance("ROSTER_ACL_HTTP_PORT", token), token


@pytest.fixture
def consul_port(consul_instance):
    return consul_instance.port, consul_instance.version
