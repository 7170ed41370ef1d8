"""Google Colab: where the kit's repository is, and the notebooks' first code cell.

Colab opens a notebook on a machine without the kit, and shows third-party widgets (ipycanvas,
the drawing pad of notebook 05) only once its custom widget manager is turned on. So every
notebook starts with :data:`CELL`: on Colab it pip-installs the kit from :data:`REPOSITORY`
and turns that widget manager on; anywhere else it does nothing. The cell cannot import
dfd_kit (on Colab the kit is not there yet), so it carries the URL written out;
``scripts/colab_cell.py`` writes it into the notebooks and ``tests/test_colab.py`` checks that
the notebooks, the README and this module agree.

What the install brings on Colab's Ubuntu (x86-64): pip installs the requirements of
pyproject.toml, oneDNN 2 among them (``onednn-cpu-gomp``; its headers and library land in the
environment's prefix or ``/usr/local``, both of which :mod:`dfd_kit.onednn` searches); Colab's
image already has the g++ that Jittor compiles itself with. None of this has been tried on
Colab itself (no Colab here): the cell is tested by simulation only (tests/test_colab.py).
"""

#: The repository on GitHub, "owner/name". OWNER is a placeholder until the repository has a
#: public address (the README's links use the same); after changing it, run
#: ``python scripts/colab_cell.py`` to rewrite the notebooks' cell and update the README's links.
GITHUB = "OWNER/dfd_kit"
REPOSITORY = f"https://github.com/{GITHUB}"
#: Notebook 00 opened on Colab, and on Binder (the README and notebook 00 link both).
COLAB_URL = f"https://colab.research.google.com/github/{GITHUB}/blob/main/notebooks/00_quick_start.ipynb"
BINDER_URL = f"https://mybinder.org/v2/gh/{GITHUB}/HEAD?urlpath=lab/tree/notebooks/00_quick_start.ipynb"

#: What pip installs on Colab. Editable (``-e``) from git: pip clones the whole repository,
#: so the bundled models (Params/) and example sketches come with the kit, which finds them
#: beside its package (dfd_kit.REPO_ROOT); a plain install would copy the package alone.
INSTALL = f"git+{REPOSITORY}#egg=dfd_kit"
#: Where pip clones it: the ``--src`` folder and the project's normalised name.
SRC = "/content"
CLONE = f"{SRC}/dfd-kit"

#: The notebooks' setup cell's id: how scripts/colab_cell.py finds the cell to replace, and how
#: tests tell it from a notebook's own first code cell.
CELL_ID = "colab-setup"
CELL = f"""\
# Google Colab only; elsewhere this cell does nothing. Colab starts without the kit: install it,
# and turn on the widget manager that third-party widgets (ipycanvas, the drawing pad) need there.
import subprocess
import sys

if "google.colab" in sys.modules:
    print("Installing dfd_kit and its requirements from {REPOSITORY} (a few minutes)")
    # -e: a clone in {CLONE}, so the bundled models and example sketches come with the kit
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "--src", "{SRC}",
                           "-e", "{INSTALL}"])
    sys.path.insert(0, "{CLONE}")   # this kernel started before the install
    from google.colab import output
    output.enable_custom_widget_manager()"""
