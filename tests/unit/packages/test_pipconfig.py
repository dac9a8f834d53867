"""The host's pip settings carried into the build (envrepro.packages.pipconfig): read like pip reads
them, http(s) only, rendered as the builder stage's pip.conf."""
import pytest

from envrepro.packages import pipconfig
from envrepro.image.templates import BUILD_DIR


HOST_PIP_CONFIG_LIST = """:env:.cert='/etc/ssl/certs/ca-certificates.crt'
:env:.default-timeout='180'
:env:.find-links='/opt/wheels'
global.cert='/etc/ssl/certs/ca-certificates.crt'
global.constraint='/etc/xdg/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/pypi-more/simple https://u:t@idx.example/simple'
global.find-links='/opt/wheels'
global.index-url='https://mirror.example/simple'
global.trusted-host='idx.example'
"""


def test_pip_settings_keep_http_urls_only():
    s = pipconfig.host_pip_settings(runner=lambda: HOST_PIP_CONFIG_LIST)
    assert s.index_url == "https://mirror.example/simple"
    assert s.extra_index_urls == ("https://u:t@idx.example/simple",)
    assert s.find_links == ()
    assert s.trusted_hosts == ("idx.example",)
    assert s.cert == "/etc/ssl/certs/ca-certificates.crt"


def test_pip_config_list_precedence():
    values = pipconfig.parse_pip_config_list("global.index-url='https://g/simple'\n"
                                         "install.index-url='https://i/simple'\n"
                                         ":env:.index-url='https://e/simple'\n"
                                         "global.cert='/a'\n")
    assert values == {"index-url": "https://e/simple", "cert": "/a"}


def test_pip_config_list_multiline_values_are_unescaped():
    text = "global.extra-index-url='\\nhttps://a.example/simple\\nhttps://b.example/simple'\n"
    s = pipconfig.pip_settings_from(pipconfig.parse_pip_config_list(text))
    assert s.extra_index_urls == ("https://a.example/simple", "https://b.example/simple")


def test_pip_settings_fall_back_to_files_and_env(monkeypatch, tmp_path):
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nextra-index-url =\n    https://x.example/simple\n    file:///local\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "none"))
    monkeypatch.setenv("PIP_INDEX_URL", "https://env.example/simple")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)

    def broken():
        raise OSError("no pip here")

    s = pipconfig.host_pip_settings(runner=broken)
    assert s.extra_index_urls == ("https://x.example/simple",)
    assert s.index_url == "https://env.example/simple"


def test_pip_conf_lists_urls_and_points_at_the_copied_ca():
    pip = pipconfig.PipSettings(index_url="https://idx.example/simple",
                         extra_index_urls=("https://u:tok@a.example/simple", "https://b.example/simple"),
                         trusted_hosts=("a.example",), find_links=("https://c.example/wheels",))
    text = pipconfig.render_pip_conf(pip, has_cert=True)
    assert "index-url = https://idx.example/simple" in text
    assert "extra-index-url =\n    https://u:tok@a.example/simple\n    https://b.example/simple" in text
    assert f"cert = {BUILD_DIR}/ca.crt" in text
    assert "cert" not in pipconfig.render_pip_conf(pipconfig.PipSettings(), has_cert=False)


@pytest.mark.parametrize("url,ok", [("https://x/simple", True), ("HTTP://x", True),
                                    ("file:///opt/pypi", False), ("/opt/wheels", False)])
def test_is_http_url(url, ok):
    assert pipconfig.is_http_url(url) is ok
