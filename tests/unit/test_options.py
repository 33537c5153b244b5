"""Unit tests for barricade.options: smtpf option syntax, files, render()."""

from __future__ import annotations

import re

import pytest

from barricade.options import REGISTRY, Config, OptionError, Registry


@pytest.fixture
def reg() -> Registry:
    """A small private registry with one option of every kind."""
    r = Registry()
    r.add("flag", False, "A boolean flag.", section="one")
    r.add("level", 1, "An integer with a minimum.", section="one", minimum=0)
    r.add("timeout", 30, "Seconds, at least one.", section="one", minimum=1)
    r.add("name", "default name", "A string.", section="two")
    r.add("hosts", ["a", "b"], "A list.", section="two")
    r.add("mode", "fast", "A choice.", section="two", kind="str", choices=("fast", "slow"))
    return r


def write(tmp_path, text: str, name: str = "barricade.cf"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --- syntax forms ------------------------------------------------------------


def test_defaults_without_arguments(reg):
    cfg = reg.parse()
    assert dict(cfg) == {
        "flag": False,
        "level": 1,
        "timeout": 30,
        "name": "default name",
        "hosts": ["a", "b"],
        "mode": "fast",
    }


def test_plus_and_minus_flags(reg):
    assert reg.parse(["+flag"])["flag"] is True
    assert reg.parse(["+flag", "-flag"])["flag"] is False
    assert reg.parse(["-flag", "+flag"])["flag"] is True


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1", True), ("yes", True), ("TRUE", True), ("on", True), ("+", True),
        ("0", False), ("no", False), ("False", False), ("off", False), ("-", False), ("", False),
    ],
)
def test_bool_assignment_words(reg, text, expected):
    assert reg.parse([f"flag={text}"])["flag"] is expected


def test_bool_bad_word_names_option(reg):
    with pytest.raises(OptionError, match=r"option flag: 'maybe' is not \+/-, 1/0"):
        reg.parse(["flag=maybe"])


def test_int_bad_value_is_not_a_number(reg):
    with pytest.raises(OptionError) as err:
        reg.parse(["timeout=lots"])
    assert str(err.value) == "option timeout: 'lots' is not a number"


def test_int_too_large_is_refused(reg):
    assert reg.parse([f"timeout={2**31 - 1}"])["timeout"] == 2**31 - 1
    for text in (str(2**31), "9" * 400, "9" * 5000):
        with pytest.raises(OptionError, match=r"option timeout: '\d+(\.\.\.)?' (is larger than 2147483647|is not a number)") as exc:
            reg.parse([f"timeout={text}"])
        assert len(str(exc.value)) < 120  # a 5,000-digit value is not echoed whole


def test_int_assignment_and_hex(reg):
    assert reg.parse(["timeout=45"])["timeout"] == 45
    assert reg.parse(["timeout=0x10"])["timeout"] == 16
    assert reg.parse(["timeout = 7"])["timeout"] == 7


def test_int_option_as_flag(reg):
    """smtpf lets integer levels be written as +name / -name (1 / 0)."""
    assert reg.parse(["-level"])["level"] == 0
    assert reg.parse(["+level"])["level"] == 1


def test_int_flag_still_checks_minimum(reg):
    with pytest.raises(OptionError, match=r"option timeout: 0 is below the minimum 1"):
        reg.parse(["-timeout"])


def test_string_assignment_keeps_inner_equals_and_case(reg):
    assert reg.parse(["name=Key=Value"])["name"] == "Key=Value"
    assert reg.parse(["name=MiXeD"])["name"] == "MiXeD"


def test_empty_string_assignment(reg):
    assert reg.parse(["name="])["name"] == ""


@pytest.mark.parametrize("quoted", ['"two words"', "'two words'"])
def test_quoted_values(reg, quoted):
    assert reg.parse([f"name={quoted}"])["name"] == "two words"


def test_mismatched_quotes_are_kept(reg):
    assert reg.parse(["name=\"two words'"])["name"] == "\"two words'"


@pytest.mark.parametrize("sep", [",", ";", " ", ", ", " ; ", "\t"])
def test_list_assignment_separators(reg, sep):
    assert reg.parse([f"hosts=x{sep}y{sep}z"])["hosts"] == ["x", "y", "z"]


def test_list_assignment_replaces(reg):
    assert reg.parse(["hosts=c"])["hosts"] == ["c"]
    assert reg.parse(["hosts="])["hosts"] == []


def test_list_append(reg):
    cfg = reg.parse(["hosts+=c", "hosts+=d;e"])
    assert cfg["hosts"] == ["a", "b", "c", "d", "e"]


def test_list_append_after_set(reg):
    assert reg.parse(["hosts=x", "hosts+=y"])["hosts"] == ["x", "y"]


def test_list_append_with_spaces_around_operator(reg):
    assert reg.parse(["hosts += c"])["hosts"] == ["a", "b", "c"]


def test_list_append_does_not_mutate_defaults(reg):
    reg.parse(["hosts+=c"])
    assert reg.parse()["hosts"] == ["a", "b"]
    assert reg.get("hosts").default == ["a", "b"]


def test_append_to_non_list_is_an_error(reg):
    with pytest.raises(OptionError, match=r"option timeout is not a list"):
        reg.parse(["timeout+=3"])


@pytest.mark.parametrize("arg", ["+name", "-hosts"])
def test_flag_form_on_non_flag_is_an_error(reg, arg):
    with pytest.raises(OptionError, match=rf"option {arg[1:]} is not a flag"):
        reg.parse([arg])


def test_missing_equals_is_an_error(reg):
    with pytest.raises(OptionError, match=r"expected name=value.*'timeout'"):
        reg.parse(["timeout"])


# --- names ----------------------------------------------------------------------


@pytest.mark.parametrize("arg", ["TIMEOUT=5", "Timeout=5", "tImEoUt=5"])
def test_names_are_case_insensitive(reg, arg):
    assert reg.parse([arg])["timeout"] == 5


def test_flag_names_are_case_insensitive(reg):
    assert reg.parse(["+FLAG"])["flag"] is True


def test_config_lookup_is_case_insensitive(reg):
    cfg = reg.parse(["timeout=9"])
    assert cfg["TimeOut"] == 9


def test_registry_contains_is_case_insensitive(reg):
    assert "HOSTS" in reg
    assert "nope" not in reg


def test_list_append_name_case_insensitive(reg):
    assert reg.parse(["HOSTS+=c"])["hosts"] == ["a", "b", "c"]


# --- errors ----------------------------------------------------------------------


@pytest.mark.parametrize("arg", ["bogus=1", "+bogus", "-bogus", "bogus+=x"])
def test_unknown_option_names_it(reg, arg):
    with pytest.raises(OptionError, match=r"unknown option 'bogus'"):
        reg.parse([arg])


def test_bad_int_value_names_option_and_value(reg):
    with pytest.raises(OptionError) as info:
        reg.parse(["timeout=soon"])
    msg = str(info.value)
    assert "timeout" in msg and "'soon'" in msg
    assert "\n" not in msg


def test_minimum_is_enforced(reg):
    with pytest.raises(OptionError, match=r"option timeout: 0 is below the minimum 1"):
        reg.parse(["timeout=0"])
    with pytest.raises(OptionError, match=r"option level: -1 is below the minimum 0"):
        reg.parse(["level=-1"])


def test_minimum_boundary_is_accepted(reg):
    assert reg.parse(["timeout=1"])["timeout"] == 1
    assert reg.parse(["level=0"])["level"] == 0


def test_choices_enforced(reg):
    assert reg.parse(["mode=slow"])["mode"] == "slow"
    with pytest.raises(OptionError, match=r"option mode: 'medium' is not one of fast, slow"):
        reg.parse(["mode=medium"])


def test_option_error_is_a_value_error():
    assert issubclass(OptionError, ValueError)


def test_register_twice_is_an_error(reg):
    with pytest.raises(OptionError, match="registered twice"):
        reg.add("FLAG", True, "again")


def test_register_unknown_kind_is_an_error(reg):
    with pytest.raises(OptionError, match="unknown kind"):
        reg.add("other", 1.5, "float", kind="float")


def test_kind_is_inferred_from_default():
    r = Registry()
    assert r.add("b", True, "b").kind == "bool"
    assert r.add("i", 3, "i").kind == "int"
    assert r.add("l", [], "l").kind == "list"
    assert r.add("s", "x", "s").kind == "str"


def test_help_whitespace_is_normalised():
    r = Registry()
    opt = r.add("x", 1, """several
            lines   of help""")
    assert opt.help == "several lines of help"


def test_get_unknown_option(reg):
    with pytest.raises(OptionError, match=r"unknown option 'zzz'"):
        reg.get("zzz")


# --- config files ----------------------------------------------------------------


def test_config_file_with_comments_and_blank_lines(reg, tmp_path):
    path = write(
        tmp_path,
        "# a comment\n"
        "\n"
        "   \n"
        "  # an indented comment\n"
        "+flag\n"
        "timeout=12\n"
        "  name = 'quoted value'  \n"
        "hosts+=c\n",
    )
    cfg = reg.parse(config_file=path)
    assert cfg["flag"] is True
    assert cfg["timeout"] == 12
    assert cfg["name"] == "quoted value"
    assert cfg["hosts"] == ["a", "b", "c"]


def test_config_file_accepts_str_path(reg, tmp_path):
    path = write(tmp_path, "timeout=5\n")
    assert reg.parse(config_file=str(path))["timeout"] == 5


def test_command_line_overrides_file(reg, tmp_path):
    path = write(tmp_path, "timeout=12\n+flag\nname=from-file\nhosts=f\n")
    cfg = reg.parse(["timeout=99", "-flag", "hosts+=cli"], config_file=path)
    assert cfg["timeout"] == 99
    assert cfg["flag"] is False
    assert cfg["name"] == "from-file"  # not on the command line: the file wins
    assert cfg["hosts"] == ["f", "cli"]  # append builds on the file's value


def test_later_lines_in_file_win(reg, tmp_path):
    path = write(tmp_path, "timeout=12\ntimeout=13\n")
    assert reg.parse(config_file=path)["timeout"] == 13


def test_file_error_names_file_and_line(reg, tmp_path):
    path = write(tmp_path, "# comment\n\ntimeout=12\nbogus=1\n")
    with pytest.raises(OptionError) as info:
        reg.parse(config_file=path)
    assert str(info.value).startswith(f"{path}:4: ")
    assert "bogus" in str(info.value)


def test_file_bad_value_names_file_line_and_option(reg, tmp_path):
    path = write(tmp_path, "+flag\ntimeout=0\n")
    with pytest.raises(OptionError) as info:
        reg.parse(config_file=path)
    assert str(info.value) == f"{path}:2: option timeout: 0 is below the minimum 1"


def test_command_line_error_has_no_file_prefix(reg, tmp_path):
    path = write(tmp_path, "timeout=5\n")
    with pytest.raises(OptionError) as info:
        reg.parse(["bogus=1"], config_file=path)
    assert str(path) not in str(info.value)
    assert "bogus" in str(info.value)


def test_missing_config_file(reg, tmp_path):
    path = tmp_path / "absent.cf"
    with pytest.raises(OptionError, match=r"cannot read config file .*absent\.cf"):
        reg.parse(config_file=path)


def test_no_config_file_when_empty_string(reg):
    assert reg.parse(config_file="")["timeout"] == 30


# --- Config -----------------------------------------------------------------------


def test_config_is_a_mapping(reg):
    cfg = reg.parse()
    assert isinstance(cfg, Config)
    assert len(cfg) == 6
    assert list(cfg) == ["flag", "level", "timeout", "name", "hosts", "mode"]
    with pytest.raises(KeyError):
        cfg["bogus"]


def test_config_replace(reg):
    cfg = reg.parse()
    new = cfg.replace(timeout=5, flag=True)
    assert new["timeout"] == 5 and new["flag"] is True
    assert cfg["timeout"] == 30  # the original is unchanged


def test_config_replace_underscore_to_dash():
    cfg = REGISTRY.parse()
    assert cfg.replace(smtp_command_timeout=7)["smtp-command-timeout"] == 7


def test_config_replace_unknown(reg):
    with pytest.raises(OptionError, match="unknown option 'nope'"):
        reg.parse().replace(nope=1)


# --- render -------------------------------------------------------------------------


def round_trip(registry: Registry, cfg, tmp_path) -> Config:
    path = write(tmp_path, registry.render(cfg), "rendered.cf")
    return registry.parse(config_file=path)


def test_render_defaults_round_trip(tmp_path):
    cfg = REGISTRY.parse()
    assert dict(round_trip(REGISTRY, cfg, tmp_path)) == dict(cfg)


def test_render_without_config_uses_defaults(tmp_path):
    assert REGISTRY.render() == REGISTRY.render(REGISTRY.parse())


def test_render_changed_values_round_trip(tmp_path):
    cfg = REGISTRY.parse([
        "-smtp-enable-esmtp",
        "+rfc1652-8bitmime",
        "smtp-command-timeout=42",
        "interfaces+=[::1]:2525",
        "interface-name=mx.example.com",
        "save-dir=/var/spool/with space",
        "reply-file=/etc/barricade/replies#1",
        "rfc2821-line-length=2",
        "message-size-limit=0",
    ])
    back = round_trip(REGISTRY, cfg, tmp_path)
    assert dict(back) == dict(cfg)
    assert back["save-dir"] == "/var/spool/with space"
    assert back["interfaces"] == ["[::0]:25", "0.0.0.0:25", "[::1]:2525"]


def test_render_private_registry_round_trip(reg, tmp_path):
    cfg = reg.parse(["+flag", "level=3", "name=a b # c", "hosts=", "mode=slow"])
    assert dict(round_trip(reg, cfg, tmp_path)) == dict(cfg)


def test_render_round_trip_value_with_apostrophe(tmp_path):
    cfg = REGISTRY.parse(["smtp-welcome-file=/etc/barricade/o'brien welcome.txt"])
    back = round_trip(REGISTRY, cfg, tmp_path)
    assert back["smtp-welcome-file"] == "/etc/barricade/o'brien welcome.txt"


def test_render_includes_every_option_with_help():
    text = REGISTRY.render()
    lines = text.splitlines()
    names = [opt.name for opt in REGISTRY]
    assert len(names) == len(set(names)) > 20
    for opt in REGISTRY:
        setting = [line for line in lines
                   if re.match(rf"^([+-]{re.escape(opt.name)}$|{re.escape(opt.name)}=)", line)]
        assert len(setting) == 1, opt.name
        first_help_words = opt.help.split()[:3]
        assert " ".join(first_help_words) in text.replace("\n# ", " "), opt.name


def test_render_sections_and_header():
    text = REGISTRY.render()
    assert text.startswith("# Barricade configuration")
    assert text.endswith("\n")
    for section in {opt.section for opt in REGISTRY}:
        assert f"\n# {section}\n" in text


def test_render_every_non_setting_line_is_a_comment():
    for line in REGISTRY.render().splitlines():
        if line and not line.startswith("#"):
            assert line[0] in "+-" or "=" in line, line


def test_render_shows_default_above_changed_value(reg):
    text = reg.render(reg.parse(["timeout=99", "+flag"]))
    lines = text.splitlines()
    i = lines.index("timeout=99")
    assert lines[i - 1] == "# default: timeout=30"
    j = lines.index("+flag")
    assert lines[j - 1] == "# default: -flag"
    # an unchanged value has no "default" comment
    k = lines.index("level=1")
    assert not lines[k - 1].startswith("# default:")


def test_render_help_lines_are_wrapped():
    r = Registry()
    r.add("long", 1, "word " * 60)
    for line in r.render().splitlines():
        if line.startswith("# word"):
            assert len(line) <= 72


def test_option_format_forms(reg):
    assert reg.get("flag").format(True) == "+flag"
    assert reg.get("flag").format(False) == "-flag"
    assert reg.get("timeout").format(5) == "timeout=5"
    assert reg.get("hosts").format(["x", "y"]) == "hosts=x; y"
    assert reg.get("name").format("a b") == 'name="a b"'
    assert reg.get("name").format("plain") == "name=plain"


def test_real_registry_minimums():
    """The core options keep timeouts positive and limits non-negative."""
    for name in ("smtp-command-timeout", "smtp-connect-timeout", "smtp-dot-timeout",
                 "smtp-data-line-timeout", "message-rcpt-limit", "message-hop-limit"):
        with pytest.raises(OptionError, match=name):
            REGISTRY.parse([f"{name}=0"])
    for name in ("message-size-limit", "smtp-drop-after", "smtp-greet-pause"):
        assert REGISTRY.parse([f"{name}=0"])[name] == 0
        with pytest.raises(OptionError, match=name):
            REGISTRY.parse([f"{name}=-1"])


def test_barricade_check_takes_trailing_flags_as_overrides():
    from barricade.explain import parse_args, split_overrides

    assert split_overrides(["--client", "192.0.2.1", "-mail-require-mx", "+call-back", "a=b",
                            "--mail", "-odd@x", "-c", "f.cf"]) == (
        ["--client", "192.0.2.1", "--mail", "-odd@x", "-c", "f.cf"],
        ["-mail-require-mx", "+call-back", "a=b"])
    args = parse_args(["--client", "192.0.2.1", "-client-is-mx", "grey-key=", "--rcpt", "a@b.example"])
    assert args.config is None  # -client-is-mx is not "-c lient-is-mx"
    assert args.options == ["-client-is-mx", "grey-key="] and args.rcpt == ["a@b.example"]


# --- smtpf's config files -------------------------------------------------------


def test_a_comment_after_a_value_is_no_part_of_it(reg, tmp_path):
    """smtpf reads ``name=value # note`` as ``value``; Barricade took the note in."""
    path = write(tmp_path, "hosts=zen.example # our list\nname=mx1.example.com\t# our name\n")
    cfg = reg.parse(config_file=path)
    assert cfg["hosts"] == ["zen.example"] and cfg["name"] == "mx1.example.com"
    path = write(tmp_path, 'name="a # b" # c\nhosts=a#b\n')  # quoted, or not after a space: kept
    cfg = reg.parse(config_file=path)
    assert cfg["name"] == "a # b" and cfg["hosts"] == ["a#b"]


def test_several_flags_on_one_line(reg, tmp_path):
    cfg = reg.parse(config_file=write(tmp_path, "+flag -level  # both\n"))
    assert cfg["flag"] is True and cfg["level"] == 0


def test_every_bad_line_is_reported_at_once(reg, tmp_path):
    path = write(tmp_path, "daemon=1\ntimeout=5\n+run-user\ntimeout=lots\n")
    with pytest.raises(OptionError) as info:
        reg.parse(config_file=path)
    assert str(info.value).splitlines() == [
        f"{path}:1: unknown option 'daemon'", f"{path}:3: unknown option 'run-user'",
        f"{path}:4: option timeout: 'lots' is not a number"]


def test_a_byte_order_mark_is_no_part_of_the_first_name(reg, tmp_path):
    path = tmp_path / "bom.cf"
    path.write_bytes(b"\xef\xbb\xbftimeout=7\n")
    assert reg.parse(config_file=path)["timeout"] == 7


def test_choices_in_any_case_are_kept_as_declared(reg):
    assert reg.parse(["mode=SLOW"])["mode"] == "slow"
    reg.add("words", [], "A list of choices.", section="two", choices=("one", "two"))
    assert reg.parse(["words=ONE, Two"])["words"] == ["one", "two"]
    assert REGISTRY.parse(["grey-key=IP,Helo"])["grey-key"] == ["ip", "helo"]


def test_a_level_has_a_maximum(reg):
    reg.add("strict", 0, "0, 1 or 2.", section="one", minimum=0, maximum=2)
    assert reg.parse(["strict=2"])["strict"] == 2
    with pytest.raises(OptionError, match="option strict: 3 is above the maximum 2"):
        reg.parse(["strict=3"])
    with pytest.raises(OptionError, match="above the maximum 2"):
        REGISTRY.parse(["rfc1652-8bitmime=99"])
