"""Tokens: roles, and a token scoped to a project."""

from __future__ import annotations

import uuid

import pytest

from cairn_client import Client, Forbidden, NotFound, PreconditionFailed

from .conftest import ADMIN, READER, VISION, WRITER
from .server import Server


def test_roles_and_project_scope(auth_server: Server) -> None:
    name = f"scoped-{uuid.uuid4().hex[:8]}"
    with Client(auth_server.url, token=ADMIN) as admin:
        admin.declare_collection(name, [("project", ["project"])])
        admin.put(name, "nlp-1", {"project": "nlp", "secret": 1})
        assert "cairn_last_sequence" in admin.metrics()
    with Client(auth_server.url, token=WRITER) as writer:
        writer.put(name, "v-1", {"project": "vision", "n": 1})
        with pytest.raises(Forbidden):
            writer.declare_collection(name)
    with Client(auth_server.url, token=READER) as reader:
        assert reader.get(name, "v-1").document["n"] == 1
        with pytest.raises(Forbidden):
            reader.put(name, "r", {"project": "vision"})
    with Client(auth_server.url, token=VISION) as vision:
        start = 0
        vision.put(name, "v-2", {"project": "vision", "n": 2})
        assert {r.id for r in vision.query(name)} == {"v-1", "v-2"}
        assert vision.query(name).count() == 2
        with pytest.raises(NotFound):
            vision.get(name, "nlp-1")  # another project's record answers as absent
        with pytest.raises(PreconditionFailed) as e:
            vision.put(name, "nlp-1", {"project": "vision"}, if_match=1)
        assert e.value.current_version is None
        with pytest.raises(Forbidden, match="taken"):
            vision.put(name, "nlp-1", {"project": "vision"})
        with pytest.raises(Forbidden):
            vision.put(name, "v-3", {"project": "nlp"})
        with pytest.raises(Forbidden):
            vision.stats()
        changes = [c.id for c in vision.changes(start, collection=name)]
        assert changes == ["v-1", "v-2"]
