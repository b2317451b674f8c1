"""Key and field names: tag values are escaped, and nothing escapes its project's slot."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from prism_limiter.engine._keys import ProjectKeys, escape, instance_id, unescape, usage_dimensions

printable = st.text(st.characters(min_codepoint=0x20, exclude_categories=["Cs"]), min_size=1)
projects = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}", fullmatch=True)


@given(a=printable, b=printable)
def test_escape_is_injective_and_leaves_no_separator(a: str, b: str) -> None:
    """Distinct values never share a field; no separator or brace survives escaping."""
    ea, eb = escape(a), escape(b)
    assert (ea == eb) == (a == b)
    for sep in "|=&{}\x1e\x1f,":
        assert sep not in ea
    assert unescape(ea) == a


@given(project=projects, value=printable, key=st.sampled_from(["customer", "team"]))
def test_every_key_of_a_project_hashes_to_its_slot(project: str, value: str, key: str) -> None:
    """All keys a script receives share the project's hash tag, whatever the tag values."""
    keys = ProjectKeys("prism", project).script_keys()
    slots = {key_slot(k.encode()) for k in keys}
    assert slots == {key_slot(project.encode())}
    assert all(k.startswith(f"prism:{{{project}}}:") for k in keys)
    dims = usage_dimensions("gpt-4o", {key: value})
    assert dims[2] == f"tag:{key}={escape(value)}"
    assert instance_id("b", value).count("=") == 1


def test_instance_ids() -> None:
    assert instance_id("monthly", None) == "monthly"
    assert instance_id("per", "org:42") == "per=org:42"
    assert instance_id("per", "a}{b") == "per=a%7D%7Bb"
