"""IKE SA and Child SA states and THE transition tables (h11 `_state.py` style).

The engine changes a state only through `ike_transition` / `child_transition`. A `(state, input)` pair
missing from a table is a protocol error: `RemoteProtocolError` when the input came from the peer,
`LocalProtocolError` when the caller asked for it. Terminal states have no outgoing entries.
"""

from __future__ import annotations

import enum

from .exceptions import LocalProtocolError, RemoteProtocolError

__all__ = [
    "IkeState",
    "IkeInput",
    "ChildState",
    "ChildInput",
    "IKE_TRANSITIONS",
    "CHILD_TRANSITIONS",
    "REMOTE_IKE_INPUTS",
    "REMOTE_CHILD_INPUTS",
    "ike_transition",
    "child_transition",
]

_INVALID_SYNTAX = 7  # RFC 7296 3.10.1; the state machine itself knows nothing of the codec


class _StateEnum(enum.Enum):
    # Members are singletons compared by identity, so hashing by identity is exact; it runs in C,
    # while Enum.__hash__ (hash of the name) is Python code on every transition-table lookup.
    __hash__ = object.__hash__


class IkeState(_StateEnum):
    INITIAL = "initial"
    SA_INIT_SENT = "sa-init-sent"  # initiator: waiting for the IKE_SA_INIT response
    SA_INIT_RECEIVED = "sa-init-received"  # responder: half-open, waiting for IKE_AUTH
    AUTH_SENT = "auth-sent"  # initiator: waiting for the IKE_AUTH response
    ESTABLISHED = "established"
    REKEYED = "rekeyed"  # replaced by a new IKE SA; only the delete exchange may follow
    DELETING = "deleting"  # we sent a Delete for this IKE SA
    DELETED = "deleted"  # terminal
    FAILED = "failed"  # terminal: negotiation/authentication failed or the peer is dead


class IkeInput(_StateEnum):
    # local (the API caller or the engine's own timers)
    SEND_SA_INIT = "send-sa-init"
    CREATED_BY_REKEY = "created-by-rekey"  # the new IKE SA of a CREATE_CHILD_SA rekey
    RESTORED = "restored"  # rebuilt from another process's snapshot (ikev2lib.ha)
    SEND_REQUEST = "send-request"  # CREATE_CHILD_SA or INFORMATIONAL on an established SA
    SEND_DELETE = "send-delete"
    REPLACED = "replaced"  # an IKE SA rekey completed; this SA is now the old one
    TIMEOUT = "timeout"  # retransmissions exhausted / half-open SA expired
    # remote (derived from a received message)
    RECV_SA_INIT_REQUEST = "recv-sa-init-request"
    RECV_SA_INIT_RETRY = "recv-sa-init-retry"  # COOKIE or INVALID_KE_PAYLOAD response
    RECV_SA_INIT_RESPONSE = "recv-sa-init-response"
    RECV_AUTH_REQUEST = "recv-auth-request"
    RECV_AUTH_RESPONSE = "recv-auth-response"
    RECV_CREATE_CHILD_REQUEST = "recv-create-child-request"
    RECV_INFORMATIONAL_REQUEST = "recv-informational-request"
    RECV_RESPONSE = "recv-response"  # response to a CREATE_CHILD_SA/INFORMATIONAL we sent
    RECV_DELETE = "recv-delete"  # the peer deleted this IKE SA
    RECV_DELETE_RESPONSE = "recv-delete-response"  # our Delete was answered
    AUTH_FAILED = "auth-failed"
    FATAL_ERROR = "fatal-error"  # error Notify or invalid message that ends the SA


_S, _I = IkeState, IkeInput
_ALIVE = (_S.ESTABLISHED, _S.REKEYED, _S.DELETING)

IKE_TRANSITIONS: dict[tuple[IkeState, IkeInput], IkeState] = {
    (_S.INITIAL, _I.SEND_SA_INIT): _S.SA_INIT_SENT,
    (_S.INITIAL, _I.RECV_SA_INIT_REQUEST): _S.SA_INIT_RECEIVED,
    (_S.INITIAL, _I.CREATED_BY_REKEY): _S.ESTABLISHED,
    (_S.INITIAL, _I.RESTORED): _S.ESTABLISHED,
    (_S.SA_INIT_SENT, _I.RECV_SA_INIT_RETRY): _S.SA_INIT_SENT,
    (_S.SA_INIT_SENT, _I.RECV_SA_INIT_RESPONSE): _S.AUTH_SENT,
    (_S.SA_INIT_RECEIVED, _I.RECV_AUTH_REQUEST): _S.ESTABLISHED,
    (_S.AUTH_SENT, _I.RECV_AUTH_RESPONSE): _S.ESTABLISHED,
    (_S.ESTABLISHED, _I.SEND_REQUEST): _S.ESTABLISHED,
    (_S.ESTABLISHED, _I.RECV_CREATE_CHILD_REQUEST): _S.ESTABLISHED,
    (_S.ESTABLISHED, _I.REPLACED): _S.REKEYED,
    (_S.ESTABLISHED, _I.SEND_DELETE): _S.DELETING,
    (_S.REKEYED, _I.SEND_DELETE): _S.DELETING,
    (_S.DELETING, _I.RECV_DELETE_RESPONSE): _S.DELETED,
}
for _state in _ALIVE:
    IKE_TRANSITIONS[(_state, _I.RECV_INFORMATIONAL_REQUEST)] = _state
    IKE_TRANSITIONS[(_state, _I.RECV_RESPONSE)] = _state
    IKE_TRANSITIONS[(_state, _I.RECV_DELETE)] = _S.DELETED
# Every non-terminal state can fail: a timeout, a failed authentication, a fatal peer error.
for _state in IkeState:
    if _state in (_S.DELETED, _S.FAILED):
        continue
    IKE_TRANSITIONS[(_state, _I.TIMEOUT)] = _S.FAILED
    IKE_TRANSITIONS[(_state, _I.FATAL_ERROR)] = _S.FAILED
for _state in (_S.SA_INIT_RECEIVED, _S.AUTH_SENT):
    IKE_TRANSITIONS[(_state, _I.AUTH_FAILED)] = _S.FAILED

REMOTE_IKE_INPUTS = frozenset(i for i in IkeInput if i.name.startswith("RECV_")) | {
    _I.AUTH_FAILED,
    _I.FATAL_ERROR,
}


class ChildState(_StateEnum):
    INSTALLED = "installed"
    REKEYING = "rekeying"  # we sent a CREATE_CHILD_SA with REKEY_SA for it
    REKEYED = "rekeyed"  # a new Child SA replaced it; waiting for the delete exchange
    DELETING = "deleting"  # we sent a Delete for it
    DELETED = "deleted"  # terminal


class ChildInput(_StateEnum):
    START_REKEY = "start-rekey"
    REKEY_FAILED = "rekey-failed"
    SEND_DELETE = "send-delete"
    IKE_SA_GONE = "ike-sa-gone"
    RECV_REKEY_DONE = "recv-rekey-done"  # response to our rekey request
    RECV_REKEY_REQUEST = "recv-rekey-request"  # the peer rekeys it
    RECV_DELETE = "recv-delete"
    RECV_DELETE_RESPONSE = "recv-delete-response"


_C, _CI = ChildState, ChildInput
CHILD_TRANSITIONS: dict[tuple[ChildState, ChildInput], ChildState] = {
    (_C.INSTALLED, _CI.START_REKEY): _C.REKEYING,
    (_C.REKEYING, _CI.REKEY_FAILED): _C.INSTALLED,
    (_C.REKEYING, _CI.RECV_REKEY_DONE): _C.REKEYED,
    (_C.INSTALLED, _CI.RECV_REKEY_REQUEST): _C.REKEYED,
    # a rekey collision (RFC 7296 2.8.1): the peer's rekey wins for the old SA's state
    (_C.REKEYING, _CI.RECV_REKEY_REQUEST): _C.REKEYED,
    (_C.INSTALLED, _CI.SEND_DELETE): _C.DELETING,
    (_C.REKEYED, _CI.SEND_DELETE): _C.DELETING,
    (_C.DELETING, _CI.RECV_DELETE_RESPONSE): _C.DELETED,
}
for _cstate in (_C.INSTALLED, _C.REKEYING, _C.REKEYED, _C.DELETING):
    CHILD_TRANSITIONS[(_cstate, _CI.RECV_DELETE)] = _C.DELETED
    CHILD_TRANSITIONS[(_cstate, _CI.IKE_SA_GONE)] = _C.DELETED

REMOTE_CHILD_INPUTS = frozenset(i for i in ChildInput if i.name.startswith("RECV_"))


def ike_transition(state: IkeState, event: IkeInput) -> IkeState:
    """The next IKE SA state, or the error for a pair that has no entry."""
    try:
        return IKE_TRANSITIONS[(state, event)]
    except KeyError:
        message = f"IKE SA cannot handle {event.value} in state {state.value}"
        if event in REMOTE_IKE_INPUTS:
            raise RemoteProtocolError(message, notify=_INVALID_SYNTAX) from None
        raise LocalProtocolError(message) from None


def child_transition(state: ChildState, event: ChildInput) -> ChildState:
    """The next Child SA state, or the error for a pair that has no entry."""
    try:
        return CHILD_TRANSITIONS[(state, event)]
    except KeyError:
        message = f"Child SA cannot handle {event.value} in state {state.value}"
        if event in REMOTE_CHILD_INPUTS:
            raise RemoteProtocolError(message, notify=_INVALID_SYNTAX) from None
        raise LocalProtocolError(message) from None
