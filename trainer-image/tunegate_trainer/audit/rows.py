"""What the audit reads of a training example: where it came from, and the prompt and
response as the person wrote them (chat-template markers stripped)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from tunegate_trainer.audit.text import plain, words
from tunegate_trainer.data import Example


@dataclass(frozen=True)
class AuditRow:
    where: str  # "file:line"
    prompt: str
    response: str
    rendered: str = field(default="", compare=False, repr=False)  # as the trainer tokenises it

    @property
    def text(self) -> str:
        return f"{self.prompt}\n{self.response}".strip()

    # Every check reads the words; split once per row.
    @cached_property
    def prompt_words(self) -> list[str]:
        return words(self.prompt)

    @cached_property
    def response_words(self) -> list[str]:
        return words(self.response)

    @property
    def words(self) -> list[str]:
        """The words of `text`."""
        return self.prompt_words + self.response_words

    @classmethod
    def of(cls, example: Example) -> AuditRow:
        return cls(
            example.where,
            plain(example.prompt),
            plain(example.target),
            example.prompt + example.target,
        )
