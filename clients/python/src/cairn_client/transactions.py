"""Transactions: operations collected in order and committed all or nothing by ``POST /v1/transactions``.
:class:`~cairn_client.Client.transaction` and :class:`~cairn_client.AsyncClient.transaction` return the
builders of this module's subclasses, usable as context managers (committed when the block ends without an
exception, nothing sent otherwise)."""

from __future__ import annotations

from typing import Any, TypeVar

from .models import Document, TransactionResult, encode_document

__all__ = ["TransactionBuilder"]

B = TypeVar("B", bound="TransactionBuilder")


class TransactionBuilder:
    """The operations of one transaction, in order; each sees the ones before it."""

    def __init__(self) -> None:
        self.operations: list[dict[str, Any]] = []
        #: The commit's answer, once committed.
        self.result: TransactionResult | None = None

    def put(
        self: B,
        collection: str,
        id: str,
        document: Document,
        *,
        if_match: int | None = None,
        create_only: bool = False,
    ) -> B:
        """Create or replace a record; only at version ``if_match``, or only if absent (``create_only``)."""
        op: dict[str, Any] = {
            "op": "put",
            "collection": collection,
            "id": id,
            "document": encode_document(document),
        }
        self._precondition(op, if_match, create_only)
        self.operations.append(op)
        return self

    def create(self: B, collection: str, id: str, document: Document) -> B:
        """Create a record that must not exist."""
        return self.put(collection, id, document, create_only=True)

    def delete(self: B, collection: str, id: str, *, if_match: int | None = None) -> B:
        """Delete a record, which must exist (at version ``if_match`` if given)."""
        op: dict[str, Any] = {"op": "delete", "collection": collection, "id": id}
        self._precondition(op, if_match, False)
        self.operations.append(op)
        return self

    def check(self: B, collection: str, id: str, *, if_match: int | None = None, absent: bool = False) -> B:
        """Write nothing; the transaction fails unless the record is at version ``if_match`` (or absent)."""
        if if_match is None and not absent:
            raise ValueError("check needs if_match or absent=True")
        op: dict[str, Any] = {"op": "check", "collection": collection, "id": id}
        self._precondition(op, if_match, absent)
        self.operations.append(op)
        return self

    def __len__(self) -> int:
        return len(self.operations)

    @staticmethod
    def _precondition(op: dict[str, Any], if_match: int | None, absent: bool) -> None:
        if if_match is not None and absent:
            raise ValueError("give if_match or create_only/absent, not both")
        if if_match is not None:
            if isinstance(if_match, bool) or not isinstance(if_match, int):
                raise TypeError("if_match in a transaction is a version number")
            op["if_match"] = if_match
        if absent:
            op["if_none_match"] = True
