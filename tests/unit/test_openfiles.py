"""The soft limit of open files is raised to the hard one at the start, and left alone where it cannot be."""

import resource

import pytest

from lorrygate.service.openfiles import UNLIMITED, raise_open_files


class Limits:
    """`resource`'s limits of open files, held in memory."""

    RLIMIT_NOFILE = resource.RLIMIT_NOFILE
    RLIM_INFINITY = resource.RLIM_INFINITY

    def __init__(self, soft, hard, refuse=False):
        self.limits, self.refuse = (soft, hard), refuse

    def getrlimit(self, which):
        return self.limits

    def setrlimit(self, which, limits):
        if self.refuse:
            raise ValueError("not allowed to raise maximum limit")
        self.limits = limits


@pytest.mark.parametrize("soft, hard, after", [
    (1024, 524_288, 524_288),  # systemd's defaults for a service
    (1024, resource.RLIM_INFINITY, UNLIMITED),
    (524_288, 524_288, 524_288),  # nothing to raise
    (resource.RLIM_INFINITY, resource.RLIM_INFINITY, resource.RLIM_INFINITY),
])
def test_the_soft_limit_is_raised_to_the_hard_one(soft, hard, after):
    limits = Limits(soft, hard)
    assert raise_open_files(limits) == (soft, after)
    assert limits.limits == (after, hard)


def test_a_limit_the_system_will_not_raise_is_left_as_it_is():
    limits = Limits(1024, 4096, refuse=True)
    assert raise_open_files(limits) == (1024, 1024)
    assert limits.limits == (1024, 4096)
