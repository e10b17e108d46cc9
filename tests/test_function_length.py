"""No function in the package is longer than 80 lines unless a `# long: <reason>` comment right above its
`def` says why (issue 18: functions short enough to read)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "qwen_sae_jax"
LIMIT = 80


def test_long_functions_give_a_reason():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                above = lines[first - 2] if first >= 2 else ""
                if length > LIMIT and not above.strip().startswith("# long:"):
                    offenders.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({length} lines)")
    assert not offenders, "functions over 80 lines without a '# long: <reason>' comment: " + "; ".join(offenders)
