"""The malloc policies of `edgestylegan.allocator`: what each does to freed large blocks (each in its own process,
because a policy is process-wide)."""
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt policies")

PROBE = textwrap.dedent("""
    import sys, torch
    from edgestylegan import allocator

    def rss_mb():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20

    assert getattr(allocator, sys.argv[1])()
    torch.ones(1) + 1   # torch's lazy first-op set-up, so that it is not counted as the block's
    base = rss_mb()
    x = torch.ones(64 * 2**20 // 4)   # 64 MiB, every page touched
    held = rss_mb() - base
    del x
    print(held, rss_mb() - base)
""")


def _held_and_left(policy: str) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", PROBE, policy], capture_output=True, text=True, check=True).stdout
    held, left = map(float, out.split())
    return held, left


def test_release_returns_freed_blocks_to_the_os():
    held, left = _held_and_left("release_large_allocations")
    assert held > 60 and held - left > 56   # the block's pages are gone; other small growth may stay


def test_keep_reuses_freed_blocks():
    held, left = _held_and_left("keep_large_allocations")
    assert held > 60 and held - left < 8


def test_keep_leaves_a_chosen_policy_alone():
    script = ("from edgestylegan import allocator as a; assert a.release_large_allocations(); "
              "assert not a.keep_large_allocations(); assert a._policy == 'release'")
    subprocess.run([sys.executable, "-c", script], check=True)
