"""`python -m bench`: build an inventory, start htekd and its peers on loopback, run each figure
for both several times, print medians, the ratio htekd/peer and whether each target is met.
With --workers N (default 2) a second htekd with `workers = N` runs every speed figure too, and
its speed-up over the first (workers = 1) is printed next to each."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import consoleload, ftpload, hostile, httpload, site as site_module, tftp
from bench.net import free_port, free_port_range, loopback
from bench.servers import CpuMeter, Htekd, InTftpd, Nginx, Vsftpd, memory_kib, reset_peak

FIGURES = ("tftp-512", "tftp-1468", "storm", "http-cfg", "http-fw", "http-parallel", "ftp-fw", "ftp-parallel",
           "inventory", "http-pipelining", "exhaustion", "console")
CONSOLE_PAGE = "/phones?sort=last_seen&order=desc"  # the whole inventory joined, sorted; one page of it shown
MB = 1e6


@dataclass
class Row:
    figure: str
    htekd: float | None
    peer: float | None
    unit: str
    target: str  # e.g. ">= 1.0x", "<= 0.33x", "< 64 MB"
    met: bool | None
    ratio: float | None = None
    speedup: float | None = None  # of htekd with workers = N over workers = 1


    def cells(self) -> list[str]:
        def number(value):
            if value is None:
                return "-"
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"

        ratio = "-" if self.ratio is None else f"{self.ratio:.2f}x"
        met = "-" if self.met is None else ("yes" if self.met else "NO")
        speedup = "-" if self.speedup is None else f"{self.speedup:.2f}x"
        return [self.figure, f"{number(self.htekd)} {self.unit}", f"{number(self.peer)} {self.unit}"
                if self.peer is not None else "-", ratio, self.target, met, speedup]


def ratio_row(figure, values: dict, unit, at_least=None, at_most=None) -> Row:
    """From the medians of "htekd", "peer" and "workers" (may be missing): a higher value is better
    with at_least, a lower one with at_most."""
    htekd, peer, workers = values["htekd"], values["peer"], values.get("workers")
    ratio = htekd / peer if peer else None
    if at_least is not None:
        target, met = f">= {at_least:g}x", ratio is not None and ratio >= at_least
        speedup = workers / htekd if workers and htekd else None
    else:
        target, met = f"<= {at_most:g}x", ratio is not None and ratio <= at_most
        speedup = htekd / workers if workers and htekd else None
    return Row(figure, htekd, peer, unit, target, met, ratio, speedup)


def medians(samples: dict) -> dict:
    return {label: median(values) for label, values in samples.items()}


def median(values):
    return statistics.median(values) if values else None


def p99(values):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else None


class Bench:
    def __init__(self, args, folder: Path):
        self.args, self.folder = args, folder
        self.host = loopback(args.host)
        self.rows: list[Row] = []
        self.servers = {}
        self.notes: list[str] = []

    # -- setting up ----------------------------------------------------------------------------
    def prepare(self) -> None:
        host = self.host
        ports = {"tftp": free_port(host, socket.SOCK_DGRAM), "ftp": free_port(host), "http": free_port(host),
                 "admin": free_port(host)}
        began = time.monotonic()
        self.site = site_module.build(self.folder / "site", host, self.args.phones, ports, free_port_range(host, 100))
        self.storm = self.site.phones[:min(self.args.storm_phones, len(self.site.phones))]
        self.expected = site_module.prerender(self.site, self.storm)
        say(f"inventory of {len(self.site.phones)} phones and pre-rendered peer files in {time.monotonic() - began:.1f} s")
        self.htekd = Htekd(self.site)
        say(f"htekd pid {self.htekd.pid}")
        self.workers = None
        if self.args.workers > 1:
            ports = {"tftp": free_port(host, socket.SOCK_DGRAM), "ftp": free_port(host), "http": free_port(host)}
            config = self.site.folder / "workers.conf"
            site_module.write_config(config, self.site.folder, host, ports, free_port_range(host, 100), self.args.workers)
            self.workers = Htekd(self.site, config, ports)
            self.expected_workers = site_module.rendered(config, host, self.storm)
            say(f"htekd with {self.args.workers} workers: pid {self.workers.pid}")
        wanted = set(self.args.figures)
        if wanted & {"tftp-512", "tftp-1468", "storm"}:
            self.servers["tftp"] = InTftpd(self.site.peer_dir("tftp"), host)
        if wanted & {"http-cfg", "http-fw", "http-parallel"}:
            self.servers["http"] = Nginx(self.site.peer_dir("http"), self.folder / "nginx", host)
        if wanted & {"ftp-fw", "ftp-parallel"}:
            self.servers["ftp"] = Vsftpd(self.site.peer_dir("ftp"), self.folder / "vsftpd", host,
                                         free_port_range(host, 100))

    def stop(self) -> None:
        for server in (*self.servers.values(), getattr(self, "htekd", None), getattr(self, "workers", None)):
            if server is not None:
                server.stop()

    # -- figures -------------------------------------------------------------------------------
    def contenders(self, protocol: str) -> list[tuple[str, object, int]]:
        """(label, server, port) of htekd, htekd with workers (if any) and the peer for `protocol`."""
        found = [("htekd", self.htekd, self.htekd.ports[protocol])]
        if self.workers is not None:
            found.append(("workers", self.workers, self.workers.ports[protocol]))
        peer = self.servers[protocol]
        return found + [("peer", peer, peer.port)]

    def samples(self, protocol: str) -> dict:
        return {label: [] for label, _, _ in self.contenders(protocol)}

    def run(self) -> None:
        for figure in self.args.figures:
            say(f"figure {figure}")
            getattr(self, "figure_" + figure.replace("-", "_"))()

    def _tftp_firmware(self, blksize: int) -> None:
        name = site_module.FIRMWARE
        rates, cpu = self.samples("tftp"), self.samples("tftp")
        for _ in range(self.args.repeat):
            for label, server, port in self.contenders("tftp"):
                with CpuMeter(server.pid) as meter:
                    fetch = tftp.fetch_one(self.host, port, name, blksize)
                spent = meter.seconds
                if fetch.error or fetch.nbytes != site_module.FIRMWARE_SIZE:
                    raise RuntimeError(f"{label}: TFTP {name}: {fetch.error or fetch.nbytes}")
                rates[label].append(fetch.nbytes / fetch.seconds / MB)
                cpu[label].append(spent)
        self.rows.append(ratio_row(f"TFTP 32 MiB blksize {blksize}", medians(rates), "MB/s", at_least=1.0))
        self.rows.append(ratio_row(f"TFTP 32 MiB blksize {blksize}: server CPU", medians(cpu), "s", at_most=1.0))

    def figure_tftp_512(self) -> None:
        self._tftp_firmware(512)

    def figure_tftp_1468(self) -> None:
        self._tftp_firmware(1468)

    def _storm(self, port: int, expected: dict[str, bytes]) -> tftp.Storm:
        # Phones come from addresses of their own (which is what spreads them over workers): on
        # 127.0.0.1 each phone booting at once gets one of 127.0.x.y.
        sources = [f"127.0.{1 + slot // 250}.{1 + slot % 250}" for slot in range(self.args.parallel)] \
            if self.host == "127.0.0.1" else None
        storm = tftp.Storm(self.host, port, [list(phone.boot_files()) for phone in self.storm],
                           parallel=self.args.parallel, blksize=self.args.storm_blksize, keep=True, sources=sources).run()
        for fetch in storm.fetches:
            want = expected.get(fetch.name)
            if want is None:
                ok = fetch.error_code == 1  # cfg<mac>: "file not found" for both
            else:
                ok = not fetch.error and bytes(fetch.content) == want
            if not ok:
                raise RuntimeError(f"storm on port {port}: {fetch.name}: {fetch.error or 'wrong bytes'}")
        return storm

    def figure_storm(self) -> None:
        totals, latencies = self.samples("tftp"), self.samples("tftp")
        server_cpu, client_cpu = self.samples("tftp"), self.samples("tftp")
        for _ in range(self.args.repeat):
            for label, server, port in self.contenders("tftp"):
                if label != "peer":
                    server.reload()  # a new snapshot: every configuration is rendered afresh, on demand
                client_before = time.process_time()
                with CpuMeter(server.pid) as meter:
                    expected = (self.expected_workers if label == "workers" else self.expected)["tftp"]
                    storm = self._storm(port, expected)
                client_cpu[label].append(time.process_time() - client_before)
                server_cpu[label].append(meter.seconds)
                totals[label].append(storm.seconds)
                latencies[label].append(p99([fetch.seconds for fetch in storm.fetches]))
        count = f"{len(self.storm):,} phones x 3 files, {self.args.parallel} at once"
        self.rows.append(ratio_row(f"TFTP storm {count}: total", medians(totals), "s", at_most=0.33))
        self.rows.append(ratio_row("TFTP storm: p99 fetch latency",
                                   {label: value * 1000 for label, value in medians(latencies).items()}, "ms", at_most=1.0))
        cpu = medians(server_cpu)
        self.rows.append(Row("TFTP storm: server CPU", cpu["htekd"], cpu["peer"], "s", "(info)", None,
                             cpu["htekd"] / cpu["peer"]))
        generator = medians(client_cpu)
        self.rows.append(Row("TFTP storm: load generator CPU", generator["htekd"], generator["peer"], "s", "(info)", None))

    def figure_http_cfg(self) -> None:
        phone = self.site.phones[0]
        name = f"cfg{phone.mac}.xml"
        rates = self.samples("http")
        for _ in range(self.args.repeat):
            for label, _, port in self.contenders("http"):
                rates[label].append(httpload.wrk(self.host, port, name, self.args.wrk_seconds, phone.user_agent))
        size = len(self.expected["http"].get(name, b"")) or len(self._http_bytes(name))
        self.rows.append(ratio_row(f"HTTP cfg<mac>.xml ({size / 1000:.1f} KB), wrk -t2 -c50", medians(rates), "req/s",
                                   at_least=0.25))

    def _http_bytes(self, name: str) -> bytes:
        from htekd.config import load
        from htekd.resolution import Client
        from htekd.resolver import Resolver

        return Resolver.from_config(load(self.site.config)).resolve(name, Client("http", self.host)).content or b""

    def figure_http_fw(self) -> None:
        self.firmware_rate("http", httpload.download)

    def firmware_rate(self, protocol: str, download) -> None:
        """GB/s of the firmware file from htekd and from the peer, `downloads` in a row each, per repetition."""
        rates = self.samples(protocol)
        for _ in range(self.args.repeat):
            for label, _, port in self.contenders(protocol):
                seconds = download(self.host, port, site_module.FIRMWARE, self.args.downloads)
                rates[label].append(site_module.FIRMWARE_SIZE * len(seconds) / sum(seconds) / 1e9)
        self.rows.append(ratio_row(f"{protocol.upper()} firmware 32 MiB", medians(rates), "GB/s", at_least=0.9))

    def figure_http_parallel(self) -> None:
        pid = self.htekd.pid
        added = []
        count = self.args.http_parallel
        for _ in range(self.args.repeat):
            baseline = memory_kib(pid, "VmRSS")
            peak = [baseline]
            exact = reset_peak(pid)

            def sample():
                peak[0] = max(peak[0], memory_kib(pid, "VmRSS"))

            done, _ = httpload.parallel_downloads(self.host, self.site.ports["http"], site_module.FIRMWARE, count,
                                                  during=sample)
            if done != count:
                raise RuntimeError(f"HTTP: {count - done} of {count} parallel downloads failed")
            top = max(peak[0], memory_kib(pid, "VmHWM")) if exact else peak[0]
            added.append((top - baseline) / 1024)
        value = median(added)
        self.rows.append(Row(f"HTTP {count} parallel firmware downloads: RSS added", value, None, "MB", "< 64 MB",
                             value < 64))

    def figure_ftp_fw(self) -> None:
        self.firmware_rate("ftp", ftpload.download)

    def figure_ftp_parallel(self) -> None:
        peer = self.servers["ftp"]
        clients = self.args.ftp_parallel
        for passive in (True, False):
            failed = {"htekd": 0, "peer": 0}
            for _ in range(self.args.repeat):
                for label, port in (("htekd", self.site.ports["ftp"]), ("peer", peer.port)):
                    failed[label] += ftpload.parallel(self.host, port, site_module.FIRMWARE, clients, passive)[1]
            mode = "passive" if passive else "active"
            self.rows.append(Row(f"FTP {clients} parallel firmware downloads ({mode}): failed", failed["htekd"],
                                 failed["peer"], "", "0 failed", failed["htekd"] == 0))

    def figure_inventory(self) -> None:
        from htekd.config import load
        from htekd.resolution import Client
        from htekd.resolver import Resolver

        reloads = [self.htekd.reload()[0] for _ in range(self.args.repeat)]
        count = len(self.site.phones)
        self.rows.append(Row(f"{count:,}-phone inventory: reload (SIGHUP to 'reloaded')", median(reloads), None, "s",
                             "<= 1 s", median(reloads) <= 1.0))
        rss = memory_kib(self.htekd.pid, "VmRSS") / 1024
        self.rows.append(Row(f"{count:,}-phone inventory: daemon RSS now", rss, None, "MB", "<= 200 MB", rss <= 200))
        config = load(self.site.config)
        resolver = Resolver.from_config(config)
        timings = []
        for phone in self.site.phones:
            began = time.perf_counter()
            resolution = resolver.resolve(f"cfg{phone.mac}.xml", Client("http", self.host, user_agent=phone.user_agent))
            timings.append(time.perf_counter() - began)
            if not resolution.ok:
                raise RuntimeError(f"render of {phone.mac}: {resolution.reason}")
        value = p99(timings) * 1000
        self.rows.append(Row(f"{count:,}-phone inventory: render cfg<mac>.xml p99 (first, uncached)", value, None, "ms",
                             "<= 2 ms", value <= 2.0))

    def figure_http_pipelining(self) -> None:
        name = f"cfg{self.site.phones[0].mac}.xml"  # generated: the answers that used to pile up
        runs = [hostile.pipelined_growth(self.host, self.site.ports["http"], self.htekd.pid, name)
                for _ in range(self.args.repeat)]
        value = max(grown for grown, _ in runs)  # the worst run: memory taken once is not given back to the OS
        sent = max(sent for _, sent in runs) / MB
        self.rows.append(Row(f"HTTP {sent:.0f} MB of pipelined GETs never read: RSS added (worst run)", value, None,
                             "MB", "< 64 MB", value < 64))

    def figure_exhaustion(self) -> None:
        model_config = f"cfg{self.storm[0].devcode}.xml"
        fetches = [(protocol, model_config, len(self.expected[protocol][model_config])) for protocol in ("tftp", "http", "ftp")]
        fetches += [(protocol, site_module.FIRMWARE, site_module.FIRMWARE_SIZE) for protocol in ("tftp", "http", "ftp")]
        failed = total = 0
        for _ in range(self.args.repeat):
            run_failed, run_total = hostile.exhaustion(self.host, self.site.ports, fetches)
            failed, total = failed + run_failed, total + run_total
        self.rows.append(Row(f"1,100 HTTP + 1,100 FTP connections (256 kept), 700 silent TFTP requests from one "
                             f"host: failed phone fetches of {total}", failed, None, "", "0 failed", failed == 0))

    def figure_console(self) -> None:
        """The console's phones page over the whole inventory; a TFTP storm while browsers ask for
        that page (ten refreshing every second, then two asking non-stop) against the same storm alone."""
        port, tftp_port = self.site.ports["admin"], self.site.ports["tftp"]
        self._storm(tftp_port)  # phones seen to join with the inventory
        count = len(self.site.phones)
        times = [consoleload.get(self.host, port, CONSOLE_PAGE) for _ in range(self.args.repeat * 5)]
        self.rows.append(Row(f"{count:,}-phone inventory: console phones page p99", p99(times), None, "s", "< 1 s",
                             p99(times) < 1.0))
        loads = {"alone": (), "10 pages/s": (10.0,), "non-stop": (0.0, 0.0)}  # one Hammer per rate
        totals = {label: [] for label in loads}
        latencies = {label: [] for label in loads}
        pages = {label: 0 for label in loads}
        for _ in range(self.args.repeat):
            for label, rates in loads.items():
                self.htekd.reload()
                with contextlib.ExitStack() as stack:
                    hammers = [stack.enter_context(consoleload.Hammer(self.host, port, CONSOLE_PAGE, rate))
                               for rate in rates]
                    storm = self._storm(tftp_port)
                for hammer in hammers:
                    if hammer.error:
                        raise RuntimeError(f"console during the storm: {hammer.error}")
                    pages[label] += hammer.done
                totals[label].append(storm.seconds)
                latencies[label].append(p99([fetch.seconds for fetch in storm.fetches]))
        for label, at_most in (("10 pages/s", 1.2), ("non-stop", None)):
            total = ratio_row(f"TFTP storm, console phones page {label} ({pages[label]} pages): total",
                              median(totals[label]), median(totals["alone"]), "s", at_most=at_most or 1.0)
            latency = ratio_row(f"TFTP storm, console phones page {label}: p99 fetch latency",
                                median(latencies[label]) * 1000, median(latencies["alone"]) * 1000, "ms",
                                at_most=at_most or 1.0)
            if at_most is None:  # the worst case, for information
                total.target = latency.target = "(info)"
                total.met = latency.met = None
            self.rows += [total, latency]

    # -- the report ----------------------------------------------------------------------------
    def report(self) -> str:
        pid = self.htekd.pid
        headers = ["figure", "htekd", "peer", "ratio", "target", "met?", f"workers={self.args.workers}"]
        columns = len(headers) if self.workers is not None else len(headers) - 1
        table = [line[:columns] for line in [headers] + [row.cells() for row in self.rows]]
        widths = [max(len(line[i]) for line in table) for i in range(len(headers))]
        lines = ["| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)) + " |" for line in table]
        lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
        lines.append("")
        lines.append(f"htekd: peak RSS {memory_kib(pid, 'VmHWM') / 1024:.0f} MB, RSS now "
                     f"{memory_kib(pid, 'VmRSS') / 1024:.0f} MB, server CPU {self.htekd.cpu():.1f} s over the run")
        lines.append(f"medians of {self.args.repeat} runs; inventory {len(self.site.phones):,} phones; "
                     f"{machine()}")
        return "\n".join(lines)


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}, Python {platform.python_version()}"


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def parse(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to run on (127.0.0.0/8 or ::1)")
    parser.add_argument("--phones", type=int, default=1000, help="inventory size (default 1000; e.g. 10000)")
    parser.add_argument("--storm-phones", type=int, default=1000, help="phones in the TFTP storm (default 1000)")
    parser.add_argument("--parallel", type=int, default=50, help="storm phones booting at once (default 50)")
    parser.add_argument("--storm-blksize", type=int, default=None, help="blksize the storm phones ask for (default: none, 512)")
    parser.add_argument("--figures", default=",".join(FIGURES), help=f"comma-separated, of: {', '.join(FIGURES)}")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each figure (default 3; medians)")
    parser.add_argument("--wrk-seconds", type=float, default=5.0, help="duration of each wrk run")
    parser.add_argument("--downloads", type=int, default=20, help="firmware downloads per throughput run (default 20)")
    parser.add_argument("--http-parallel", type=int, default=200, help="parallel HTTP firmware downloads")
    parser.add_argument("--ftp-parallel", type=int, default=20, help="parallel FTP clients")
    parser.add_argument("--workers", type=int, default=2,
                        help="workers of a second htekd run next to the first for the speed-up column (1: none)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (printed)")
    args = parser.parse_args(argv)
    args.figures = [f.strip() for f in args.figures.split(",") if f.strip()]
    unknown = [f for f in args.figures if f not in FIGURES]
    if unknown:
        parser.error(f"unknown figure {', '.join(unknown)} (choose from {', '.join(FIGURES)})")
    for name in ("phones", "storm_phones", "parallel", "repeat", "downloads", "http_parallel", "ftp_parallel"):
        value = getattr(args, name)
        if not 1 <= value <= 100_000:
            parser.error(f"--{name.replace('_', '-')} must be between 1 and 100000")
    if not 1 <= args.workers <= 64:
        parser.error("--workers must be between 1 and 64")
    if not 1 <= args.wrk_seconds <= 600:
        parser.error("--wrk-seconds must be between 1 and 600")
    return args


def main(argv=None) -> int:
    args = parse(argv)
    try:
        loopback(args.host)
    except ValueError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    folder = Path(tempfile.mkdtemp(prefix="htekd-bench-"))
    folder.chmod(0o755)
    bench = Bench(args, folder)
    try:
        bench.prepare()
        bench.run()
        print(bench.report())
    finally:
        bench.stop()
        if args.keep:
            say(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    return 0 if all(row.met is not False for row in bench.rows) else 1
