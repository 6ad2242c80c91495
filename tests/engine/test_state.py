"""The transition tables (h2 test_state_machines style): Hypothesis drives every (state, input) pair."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ikev2lib.exceptions import LocalProtocolError, RemoteProtocolError
from ikev2lib.state import (
    CHILD_TRANSITIONS,
    IKE_TRANSITIONS,
    REMOTE_CHILD_INPUTS,
    REMOTE_IKE_INPUTS,
    ChildInput,
    ChildState,
    IkeInput,
    IkeState,
    child_transition,
    ike_transition,
)

IKE_TERMINAL = {IkeState.DELETED, IkeState.FAILED}


@given(st.sampled_from(IkeState), st.sampled_from(IkeInput))
def test_every_ike_pair_is_a_transition_or_the_right_error(state: IkeState, event: IkeInput) -> None:
    if (state, event) in IKE_TRANSITIONS:
        assert ike_transition(state, event) == IKE_TRANSITIONS[(state, event)]
        return
    expected = RemoteProtocolError if event in REMOTE_IKE_INPUTS else LocalProtocolError
    with pytest.raises(expected):
        ike_transition(state, event)


@given(st.sampled_from(ChildState), st.sampled_from(ChildInput))
def test_every_child_pair_is_a_transition_or_the_right_error(state: ChildState, event: ChildInput) -> None:
    if (state, event) in CHILD_TRANSITIONS:
        assert child_transition(state, event) == CHILD_TRANSITIONS[(state, event)]
        return
    expected = RemoteProtocolError if event in REMOTE_CHILD_INPUTS else LocalProtocolError
    with pytest.raises(expected):
        child_transition(state, event)


@given(st.lists(st.sampled_from(IkeInput), max_size=40))
def test_random_ike_input_sequences_stay_in_the_table(events: list[IkeInput]) -> None:
    state = IkeState.INITIAL
    for event in events:
        try:
            state = ike_transition(state, event)
        except (RemoteProtocolError, LocalProtocolError):
            continue  # the engine drops or refuses such input; the state is unchanged
        assert state in IkeState
    if state in IKE_TERMINAL:
        assert all(ike_transition_or_none(state, e) is None for e in IkeInput)


def ike_transition_or_none(state: IkeState, event: IkeInput) -> IkeState | None:
    try:
        return ike_transition(state, event)
    except (RemoteProtocolError, LocalProtocolError):
        return None


def test_terminal_states_have_no_exits_and_every_state_can_end() -> None:
    for (state, _), _target in IKE_TRANSITIONS.items():
        assert state not in IKE_TERMINAL
    for (state, _), _target in CHILD_TRANSITIONS.items():
        assert state != ChildState.DELETED
    for state in IkeState:
        if state not in IKE_TERMINAL:
            assert IKE_TRANSITIONS[(state, IkeInput.TIMEOUT)] == IkeState.FAILED
    for cstate in ChildState:
        if cstate != ChildState.DELETED:
            assert CHILD_TRANSITIONS[(cstate, ChildInput.IKE_SA_GONE)] == ChildState.DELETED


def test_every_ike_state_is_reachable_from_initial() -> None:
    seen = {IkeState.INITIAL}
    frontier = [IkeState.INITIAL]
    while frontier:
        state = frontier.pop()
        for (src, _), dst in IKE_TRANSITIONS.items():
            if src == state and dst not in seen:
                seen.add(dst)
                frontier.append(dst)
    assert seen == set(IkeState)
