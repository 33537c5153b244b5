"""A worker's fallback to the last version of a map that loaded (barricade.snapshot)."""

from __future__ import annotations

import shutil

import pytest

from barricade import maps, snapshot
from barricade.maps import MapError, RouteMap
from barricade.options import REGISTRY, OptionError
from barricade.policy.access import AccessMap
from tests.unit.test_maps import BASIC_ROUTES, FakeClock, write_map


@pytest.fixture
def master_dir(tmp_path, monkeypatch):
    where = tmp_path / "master"
    where.mkdir()
    monkeypatch.setenv(snapshot.SNAPSHOT_ENV, str(where))
    return where


def test_a_map_that_does_not_load_is_served_from_its_last_good_copy_until_mended(
        tmp_path, master_dir, logged):
    path = write_map(tmp_path / "route-map", BASIC_ROUTES, mtime=1000)
    RouteMap(str(path))  # a worker (or the master) loaded it: the copy is written
    assert len(list(master_dir.glob("map-*-route-map"))) == 1

    write_map(path, BASIC_ROUTES + "route:x.example FORWARD: h:0\n", mtime=2000)  # a bad port
    clock = FakeClock()
    replacement = RouteMap(str(path), clock=clock)  # a worker started now
    assert replacement.for_recipient("a@example.com").forward == (("127.0.0.1", 2601), ("192.168.0.9", 25))
    assert replacement.for_recipient("a@x.example") is None
    said = [e for e in logged if "serving the last version" in e.get("log_format", "")]
    assert len(said) == 1 and ":13:" in said[0]["err"] and said[0]["log_level"].name == "error"

    clock.now += maps.CHECK_INTERVAL + 1  # the broken file is not reported again
    replacement.for_recipient("a@example.com")
    assert not [e for e in logged if "map reload failed" in e.get("log_format", "")]

    write_map(path, BASIC_ROUTES + "route:x.example FORWARD: h\n", mtime=3000)  # mended
    clock.now += maps.CHECK_INTERVAL + 1
    assert replacement.for_recipient("a@x.example").forward == (("h", 25),)
    # ... and the mended version is the copy from now on
    write_map(path, "route:local nonsense\n", mtime=4000)
    assert RouteMap(str(path)).for_recipient("a@x.example").forward == (("h", 25),)


def test_a_reload_the_map_refuses_leaves_the_copy_alone(tmp_path, master_dir):
    path = write_map(tmp_path / "access-map", "connect:192.0.2.1 REJECT\n", mtime=1000)
    running = AccessMap(str(path))
    write_map(path, "connect:192.0.2.1 BOGUS-ACTION\n", mtime=2000)
    assert running.reload() is False
    assert AccessMap(str(path)).get("connect:192.0.2.1") == "REJECT"


def test_a_missing_map_falls_back_too_and_two_maps_of_one_name_keep_apart(tmp_path, master_dir):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    RouteMap(str(write_map(a / "route-map", "route:local FORWARD: 127.0.0.1:26\n")))
    RouteMap(str(write_map(b / "route-map", "route:local FORWARD: 127.0.0.1:27\n")))
    (a / "route-map").unlink()
    assert RouteMap(str(a / "route-map")).get("route:local") == "FORWARD: 127.0.0.1:26"


def test_without_a_master_a_broken_map_is_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv(snapshot.SNAPSHOT_ENV, raising=False)
    path = write_map(tmp_path / "route-map", "route:local nonsense\n")
    with pytest.raises(MapError):
        RouteMap(str(path))
    assert not list(tmp_path.glob("map-*"))


def test_a_copy_that_cannot_be_written_does_not_fail_the_load(tmp_path, monkeypatch):
    monkeypatch.setenv(snapshot.SNAPSHOT_ENV, str(tmp_path / "gone"))
    path = write_map(tmp_path / "route-map", BASIC_ROUTES)
    assert RouteMap(str(path)).get("route:local") == "FORWARD: 127.0.0.1:26"


def test_the_config_text_is_kept_as_parsed(tmp_path):
    conf = tmp_path / "barricade.cf"
    conf.write_text("# a comment\nmessage-size-limit=1000000\n")
    config = REGISTRY.parse(["smtp-command-timeout=30"], conf)
    assert config.file_text == conf.read_text()
    assert config.replace(smtp_command_timeout=60).file_text == config.file_text
    assert REGISTRY.parse([]).file_text is None
    conf.write_bytes(b"message-size-limit=1\n\xff\n")
    with pytest.raises(OptionError, match="is not UTF-8"):
        REGISTRY.parse([], conf)


def test_the_master_keeps_the_maps_its_options_check_loaded_without_parsing_them_again(
        tmp_path, monkeypatch):
    """With workers the master loads the maps once, when twistd checks the options (before
    its directory exists); those texts become the first copies, not a second parse. A
    map changed on disk meanwhile does not matter: the copy is the version that loaded."""
    from barricade import service, workers

    monkeypatch.setenv(snapshot.SNAPSHOT_ENV, "")  # restored after the master sets it
    monkeypatch.delenv(snapshot.SNAPSHOT_ENV)
    routes = write_map(tmp_path / "route-map", BASIC_ROUTES)
    access = write_map(tmp_path / "access-map", "connect:192.0.2.1 REJECT\n")
    config = REGISTRY.parse([f"route-map={routes}", f"access-map={access}", "workers=2"])
    snapshot.collect()
    service.load_maps(config)  # what build_context does in the options check
    routes.write_text("route:local broken\n")
    parsed: list[object] = []
    monkeypatch.setattr(workers, "load_maps", parsed.append)
    master = workers.WorkerMaster(config, [])
    made: list[str] = []
    try:
        master._keep_startup_files()
        made.append(master.snapshot_dir)
        assert parsed == []
        assert snapshot.kept_map(routes) == BASIC_ROUTES
        assert snapshot.kept_map(access) == "connect:192.0.2.1 REJECT\n"
        master._keep_startup_files()  # nothing collected any more: the maps are parsed
        made.append(master.snapshot_dir)
        assert parsed == [config]
    finally:
        for where in made:
            shutil.rmtree(where, ignore_errors=True)
