"""No function in src/ is longer than a screen (60 lines, its docstring included): a stage, an
analysis or an ending that grows past it is split into named parts (DESIGN.md, "Where values live")."""

import ast
from pathlib import Path

import private_api

SRC = Path(private_api.__file__).parent
LIMIT = 60


def test_no_function_in_src_is_longer_than_a_screen():
    long = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > LIMIT:
                    long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, f"functions longer than {LIMIT} lines: {long}"
