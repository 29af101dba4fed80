"""The command line as a person meets it: clear errors, no tracebacks."""

from click.testing import CliRunner

from station.cli import main


def test_evaluate_on_a_missing_folder_names_it(tmp_path):
    result = CliRunner().invoke(main, ["evaluate", "--data", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "nope: no such folder" in result.output
    assert "Traceback" not in result.output


def test_evaluate_with_a_missing_model_names_the_file(tmp_path):
    from conftest import SAMPLE_DIR

    result = CliRunner().invoke(
        main, ["evaluate", "--model", str(tmp_path), "--data", str(SAMPLE_DIR)]
    )
    assert result.exit_code == 1
    assert "model_card.json: model card not found" in result.output


def test_evaluate_shipped_model_on_the_samples(tmp_path):
    from conftest import SAMPLE_DIR

    result = CliRunner().invoke(
        main, ["evaluate", "--data", str(SAMPLE_DIR), "--plots", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "MISSED DEFECTS 0" in result.output
    assert (tmp_path / "confusion_matrix.png").exists()


def test_sim_mega_prints_a_port_a_host_can_handshake_with(tmp_path):
    import subprocess
    import sys

    from station.link import messages as m
    from station.link.session import MegaSession

    link = tmp_path / "reject-mega"
    proc = subprocess.Popen(
        [sys.executable, "-m", "station", "sim-mega", "--link", str(link)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line == f"port: {link}"
        session = MegaSession(str(link), m.Configure(1, 500, 50, 1000, 2000, 100, 1000, 42))
        identify = session.start()
        assert identify.firmware == m.FIRMWARE_NAME
        session.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0
    assert not link.exists(), "the stable name goes away with the simulated Mega"


def test_link_bench_json_has_the_figures():
    import json as json_module
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "station", "link-bench", "--round-trips", "50", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json_module.loads(out.stdout.strip().splitlines()[-1])
    assert result["round_trips"] == 50
    assert 0 < result["rtt_ms_p50"] <= result["rtt_ms_p99"] <= result["rtt_ms_max"]
    assert result["encode_frames_per_s"] > 0 and result["decode_frames_per_s"] > 0


def test_vision_line_flag_runs_the_virtual_line_and_the_soak_with_no_photo_eye(tmp_path):
    """`--vision-line`: the Mega has no photo-eye, so every reject is a VISION_REJECT it was
    told to fire, and the soak says which line it ran."""
    import json

    run = CliRunner().invoke(
        main,
        ["run", "--virtual-line", "--vision-line", "--parts", "10", "--json"]
        + ["--out", str(tmp_path / "run")],
    )
    assert run.exit_code == 0, run.output
    summary = json.loads(run.output.strip().splitlines()[-1])
    assert summary["routed_as_verdict"] == summary["parts"] == 10 and summary["rejected"] > 0
    reasons = {"vision": summary["rejected"], "not_actuated": 10 - summary["rejected"]}
    assert summary["mega_gate_reasons"] == reasons, summary  # a photo-eye line: "verdict"
    soak = CliRunner().invoke(
        main,
        ["soak", "--vision-line", "--parts", "200", "--faults", "none", "--json"]
        + ["--out", str(tmp_path / "soak")],
    )
    assert soak.exit_code == 0, soak.output
    assert json.loads(soak.output.strip().splitlines()[-1])["trigger"] == "vision"
    real = CliRunner().invoke(main, ["run", "--vision-line", "--config", "x.yaml"])
    assert real.exit_code == 2 and "--virtual-line" in real.output
