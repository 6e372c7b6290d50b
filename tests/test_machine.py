from lepton_ai.machine import cpu_info, describe, machine_info


def test_cpu_info_names_the_cpu_and_its_flags() -> None:
    cpu = cpu_info()
    assert cpu["model"] and cpu["cores"] >= 1
    with open("/proc/cpuinfo") as f:
        text = f.read()
    if " avx2 " in text:
        assert "avx2" in cpu["flags"]


def test_describe_is_one_line() -> None:
    line = describe(machine_info())
    assert "\n" not in line and machine_info()["cpu"]["model"] in line
