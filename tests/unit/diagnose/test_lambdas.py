"""diagnose/lambdas.py: Lambda bytecode unmarshalled under the target interpreter."""
import base64
import marshal

from envrepro.diagnose.lambdas import check_lambdas
from envrepro.modelfiles.info import LambdaInfo
from envrepro.modelfiles.read import ModelFileInfo


def test_check_lambdas_here():
    good = base64.b64encode(marshal.dumps((lambda x: x + 1).__code__)).decode()
    info = ModelFileInfo(path="/m.h5", lambdas=[LambdaInfo("a", "lambda", good), LambdaInfo("b", "lambda", "AAAA")])
    out = check_lambdas(info, None)
    assert out[0] == "ok" and out[1] != "ok"
    assert check_lambdas(ModelFileInfo(path="/m"), None) == []
