"""Server mode without the `server` extra says what to install (no bare ImportError)."""

from __future__ import annotations

import subprocess
import sys


def test_a_url_without_psycopg_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['psycopg'] = None  # as if the server extra were not installed\n"
        "from memos_core import MemOS\n"
        "from memos_core.errors import MemOSError\n"
        "try:\n"
        "    MemOS('postgresql://u@127.0.0.1:1/db')\n"
        "except MemOSError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "pip install 'memos-core[server]'" in out.stdout
