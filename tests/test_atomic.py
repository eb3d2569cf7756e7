"""Atomic writes and output claims under a hostile or unlucky machine: a link planted in a shared folder is never
written through, a full disk is one UserError that keeps the previous file, and of two claims on one output exactly
one wins, also across processes."""

import errno
import os
import stat
import subprocess
import sys

import pytest
import torch

from alexnet_perf import atomic
from alexnet_perf.atomic import claim_output, write_atomic, write_text_atomic
from alexnet_perf.checkpoint import save_atomic
from alexnet_perf.errors import UserError

from conftest import full_disk


def test_links_planted_at_predictable_temporary_names_are_never_written_through(tmp_path):
    shared, secret = tmp_path / "shared", tmp_path / "secret.txt"
    shared.mkdir()
    secret.write_text("precious")
    for pid in range(os.getpid(), os.getpid() + 300):  # the names a pid-based temporary would take
        (shared / f".x.json.{pid}.tmp").symlink_to(secret)
    write_text_atomic(shared / "x.json", '{"a": 1}')
    assert secret.read_text() == "precious"
    assert not (shared / "x.json").is_symlink() and (shared / "x.json").read_text() == '{"a": 1}'


def test_a_link_at_the_target_itself_is_replaced_not_followed(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("precious")
    (tmp_path / "x.json").symlink_to(secret)
    write_text_atomic(tmp_path / "x.json", "new")
    assert secret.read_text() == "precious" and (tmp_path / "x.json").read_text() == "new"


@pytest.mark.parametrize("through_a_link", [False, True])
def test_a_pipe_or_device_at_the_target_is_refused_and_left_in_place(tmp_path, through_a_link):
    """The rename would put a plain file where a named pipe, or (as root) /dev/null or /dev/full, was."""
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    target = tmp_path / "link" if through_a_link else pipe
    if through_a_link:
        target.symlink_to(pipe)
    with pytest.raises(UserError, match="socket or descriptor link, not a file; it is unchanged"):
        write_text_atomic(target, "new")
    with pytest.raises(UserError, match=r"--json .* is a device, pipe, socket or descriptor link, not a file"):
        atomic.check_writable(target, "--json")
    assert stat.S_ISFIFO(pipe.stat().st_mode) and target.exists() and sorted(os.listdir(tmp_path)) == sorted(
        ["pipe"] + (["link"] if through_a_link else []))


def test_a_link_to_a_process_descriptor_is_refused_even_when_it_leads_to_a_plain_file(tmp_path):
    """Like /dev/stdout with the output sent to a file: the rename would replace the link (as root, /dev/stdout)."""
    with open(tmp_path / "out.txt", "w") as out:
        (tmp_path / "stdout").symlink_to(f"/proc/self/fd/{out.fileno()}")
        assert (tmp_path / "stdout").resolve() == (tmp_path / "out.txt").resolve()
        with pytest.raises(UserError, match="is a device, pipe, socket or descriptor link, not a file"):
            write_text_atomic(tmp_path / "stdout", "new")
    assert (tmp_path / "stdout").is_symlink()


@pytest.mark.parametrize("writer", ["torch.save", "text"])
def test_a_full_disk_is_one_user_error_and_keeps_the_previous_file(tmp_path, monkeypatch, writer):
    target = tmp_path / "model.pth"
    target.write_bytes(b"previous")
    full_disk(monkeypatch)
    with pytest.raises(UserError) as raised:
        if writer == "torch.save":
            save_atomic({"w": torch.zeros(10_000)}, target)
        else:
            write_text_atomic(target, "x" * 100_000)
    message = str(raised.value)
    assert "No space left on device" in message and "previous file, if any, is unchanged" in message
    assert "\n" not in message
    assert target.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["model.pth"]


def test_a_read_only_folder_is_one_user_error(tmp_path, monkeypatch):
    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", refused)
    with pytest.raises(UserError, match="cannot write .*x.json: Permission denied"):
        write_atomic(tmp_path / "x.json", lambda f: f.write(b"{}"))


def test_of_two_claims_on_one_output_exactly_one_proceeds(tmp_path):
    with claim_output(tmp_path / "m.pth", "--checkpoint"):
        with pytest.raises(UserError, match=r"--checkpoint .*m.pth is in use by another run \(pid \d+\)"):
            with claim_output(tmp_path / "." / "m.pth", "--checkpoint"):
                pass
    with claim_output(tmp_path / "m.pth", "--checkpoint"):  # released when the first run ended
        pass


def test_a_claim_held_by_another_process_refuses_this_one(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom alexnet_perf.atomic import claim_output\n"
                               "with claim_output(sys.argv[1], 'x'):\n    print('held', flush=True)\n"
                               "    time.sleep(60)", str(tmp_path / "out")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"in use by another run \\(pid {holder.pid}\\)"):
            with claim_output(tmp_path / "out", "--out"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with claim_output(tmp_path / "out", "--out"):  # the kernel released the killed process's lock
        pass
