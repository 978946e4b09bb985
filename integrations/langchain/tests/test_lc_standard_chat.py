"""ChatMemOS under langchain-tests' standard chat-model suites.

* ``ChatModelUnitTests`` on a MemOS with the tiny random Llama attached (construction and
  parameters only; nothing generates).
* ``ChatModelIntegrationTests`` twice: on the tiny model (fast; its text is noise but every
  structural contract holds) and on the real local SmolLM2-135M-Instruct (marked slow).

Skipped by the suites' own switches, each for a feature the local model lacks: tool calling
and tool choice (the 135M model calls no tools), structured output and JSON mode (no tool
calling or constrained decoding), image/audio/PDF inputs (text only), Anthropic-format
inputs, per-call model override (one local model per MemOS), and the VCR timing test (no
HTTP to record). Two unit
switches are not model features: ``test_init_from_env`` (nothing is read from the
environment: no API key) and ``test_serdes`` (the model holds a live ``MemOS``, so it is not
LangChain-serialisable).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: the machine is shared

from collections.abc import Iterator
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests
from memos_core import InvalidInputError, MemOS, MemOSConfig

from langchain_memos import ChatMemOS


def _open(tmp_path_factory: pytest.TempPathFactory, name: str, model: Any) -> MemOS:
    mos = MemOS(tmp_path_factory.mktemp(name), config=MemOSConfig(show_progress=False))
    mos.attach_model(model)
    mos.add("The user's bike is a green Brompton.", user_id="suite", type="fact")
    return mos


@pytest.fixture(scope="module")
def tiny_mos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemOS]:
    from memos_core.runtime import LocalModel

    mos = _open(tmp_path_factory, "tiny", LocalModel.tiny(seed=0))
    yield mos
    mos.close()


@pytest.fixture(scope="module")
def smol_mos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemOS]:
    from memos_core.runtime import LocalModel

    mos = _open(tmp_path_factory, "smol", LocalModel.default())
    yield mos
    mos.close()


class _LocalModelSwitches:
    """What the local model lacks, said once for all three suites."""

    mos: MemOS

    @property
    def chat_model_class(self) -> type[BaseChatModel]:
        return ChatMemOS

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"mos": self.mos, "user_id": "suite"}

    @property
    def has_tool_calling(self) -> bool:
        return False  # SmolLM2-135M does not call tools

    @property
    def has_tool_choice(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False  # no tool calling, no constrained decoding

    @property
    def supports_json_mode(self) -> bool:
        return False

    @property
    def supports_model_override(self) -> bool:
        return False  # a MemOS answers with its one attached local model

    @property
    def returns_usage_metadata(self) -> bool:
        return True


class TestChatMemOSUnit(_LocalModelSwitches, ChatModelUnitTests):
    @pytest.fixture(autouse=True)
    def _attach(self, tiny_mos: MemOS) -> None:
        self.mos = tiny_mos


class TestChatMemOSIntegrationTiny(_LocalModelSwitches, ChatModelIntegrationTests):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {**super().chat_model_params, "max_tokens": 12}

    @pytest.fixture(autouse=True)
    def _attach(self, tiny_mos: MemOS) -> None:
        self.mos = tiny_mos


@pytest.mark.slow
class TestChatMemOSIntegrationSmolLM2(_LocalModelSwitches, ChatModelIntegrationTests):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {**super().chat_model_params, "max_tokens": 24}

    @pytest.fixture(autouse=True)
    def _attach(self, smol_mos: MemOS) -> None:
        self.mos = smol_mos


# ---------------------------------------------------------------- what the suites imply


def test_system_messages_open_the_system_turn(tiny_mos: MemOS) -> None:
    model = ChatMemOS(mos=tiny_mos, user_id="suite", max_tokens=3)
    answer = model.invoke([SystemMessage("Answer in French."), HumanMessage("hi"),
                           AIMessage("bonjour"), SystemMessage("Be brief."),
                           HumanMessage("What bike do I have?")])
    trace = answer.response_metadata["trace"]
    assert trace["new_tokens"] <= 3
    # the prompt the model saw: rebuild it the way the core does and compare token counts
    from memos_core.chat import split_messages

    split = split_messages([SystemMessage("Answer in French."), HumanMessage("hi"),
                            AIMessage("bonjour"), SystemMessage("Be brief."),
                            HumanMessage("What bike do I have?")])
    assert split.system == "Answer in French.\n\nBe brief."
    assert split.history == [{"role": "user", "content": "hi"},
                             {"role": "assistant", "content": "bonjour"}]
    assert split.query == "What bike do I have?"


def test_standard_params_are_mapped_not_ignored(tiny_mos: MemOS) -> None:
    model = ChatMemOS(mos=tiny_mos, user_id="suite", max_tokens=4, temperature=0,
                      stop=["zzz"], model="my-name")
    assert model.max_new_tokens == model.max_tokens == 4
    params = model._get_ls_params()
    assert params["ls_max_tokens"] == 4 and params["ls_stop"] == ["zzz"]
    assert params["ls_temperature"] == 0.0
    assert params["ls_model_name"] in {"my-name", tiny_mos_model_id(tiny_mos)}
    assert model._get_ls_params(model="other")["ls_model_name"] == "other"
    answer = model.invoke("What bike do I have?", max_tokens=2)
    assert answer.response_metadata["trace"]["new_tokens"] <= 2
    with pytest.raises(ValueError, match="temperature"):  # pydantic's ValidationError
        ChatMemOS(mos=tiny_mos, user_id="suite", temperature=0.7)
    with pytest.raises(InvalidInputError, match="temperature"):
        model.invoke("hi", temperature=0.5)


def tiny_mos_model_id(mos: MemOS) -> str:
    from memos_core.engine import engine_for

    return engine_for(mos).model.model_id
