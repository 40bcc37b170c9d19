"""The migration runner's statement splitter: a `;` ends a statement only outside strings, quoted
identifiers and comments."""

from __future__ import annotations

import pytest

from lictel.warehouse import MIGRATIONS, split_statements


def test_semicolons_inside_strings_identifiers_and_comments_do_not_split() -> None:
    text = """
    -- a comment; with a semicolon
    CREATE VIEW v AS SELECT 'a;b' AS x, "odd;name" AS y, `also;odd` AS z; /* block; comment */
    SELECT 'it''s; fine', 'back\\'slash; too' -- trailing; comment
    ;
    INSERT INTO t VALUES ('--not a comment', '/* nor this */');
    """
    assert split_statements(text) == [
        "CREATE VIEW v AS SELECT 'a;b' AS x, \"odd;name\" AS y, `also;odd` AS z",
        "SELECT 'it''s; fine', 'back\\'slash; too'",
        "INSERT INTO t VALUES ('--not a comment', '/* nor this */')",
    ]


def test_a_statement_without_a_final_semicolon_and_empty_statements() -> None:
    assert split_statements(";;SELECT 1;\n;\nSELECT 2") == ["SELECT 1", "SELECT 2"]
    assert split_statements("-- only a comment\n") == []


@pytest.mark.parametrize("text", ["SELECT 'open", "SELECT `x", "SELECT 1 /* open"])
def test_unterminated_quotes_and_comments_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="unterminated"):
        split_statements(text)


def test_every_migration_splits_into_statements_without_comments() -> None:
    for path in sorted(MIGRATIONS.glob("*.sql")):
        statements = split_statements(path.read_text())
        assert statements, path
        for stmt in statements:
            assert "--" not in stmt and not stmt.endswith(";"), (path, stmt)
            assert stmt.split()[0] in {"CREATE", "ALTER", "INSERT"}, (path, stmt)
