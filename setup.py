"""Build hook: ship the widget templates and the dashboard notebook inside the package.

They live at the top of the repository (``widgets/``, ``dashboards/``), where front-end and
notebook people find them; a wheel must carry them too, or ``import snoop_nb.ui`` and
``snoop dashboard`` fail once the checkout is gone. setuptools' package data only takes files
inside a package, so ``build_py`` copies them into ``snoop_nb/ui/widgets`` and
``snoop_nb/ui/dashboards`` of the build. Everything else is declared in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
#: top-level folder -> (folder inside the built package, file patterns shipped)
ASSETS = {
    "widgets": ("snoop_nb/ui/widgets", ("*.vue", "*.js", "*.css")),
    "dashboards": ("snoop_nb/ui/dashboards", ("*.ipynb", "*.json")),
}


class BuildPyWithAssets(build_py):
    """``build_py`` that also copies the front-end assets into the built package."""

    def run(self) -> None:
        super().run()
        for source, (target, patterns) in ASSETS.items():
            for pattern in patterns:
                for path in sorted((HERE / source).glob(pattern)):
                    out = Path(self.build_lib) / target / path.name
                    self.mkpath(str(out.parent))
                    self.copy_file(str(path), str(out))


setup(cmdclass={"build_py": BuildPyWithAssets})
