# Stand-in for the get-pip.py that ansible-test downloads to bootstrap pip into its virtualenvs:
# its download host is unreachable here, PyPI is not. It bootstraps pip with the standard
# library's ensurepip (in a child process: ensurepip hides pip's configuration from its own
# process), then installs the packages ansible-test asks for from the package index.
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade"], stdout=subprocess.DEVNULL)
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
if args:
    subprocess.check_call([sys.executable, "-m", "pip", "install", *args])
