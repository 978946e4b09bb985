"""Entity extraction. The default is rule-based (no LLM); pass any ``EntityExtractor``."""

from memos_core.extraction.entities import EntityExtractor, RuleEntityExtractor

__all__ = ["EntityExtractor", "RuleEntityExtractor"]
