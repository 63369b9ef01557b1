"""The stack end to end: sign in, overview figures from the ledger, a customer's ledger."""
from models import db
from services.ledger import posting as ledger


def test_login_page_and_redirect_for_anonymous(client):
    assert client.get("/login").status_code == 200
    resp = client.get("/")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]


def test_wrong_password_is_refused_and_audited(client, make):
    from models import AuditLog
    from tests.helpers import csrf_from

    staff = make.staff(role="support")
    token = csrf_from(client.get("/login").get_data(as_text=True))
    resp = client.post("/login", data={"email": staff.email, "password": "wrong password!",
                                       "csrf_token": token})
    assert resp.status_code == 401
    assert "incorrect" in resp.get_data(as_text=True)
    assert db.session.query(AuditLog).filter_by(action="login.failed").count() == 1


def test_overview_shows_real_figures(login, make):
    c = make.customer(credits=1500)
    ledger.debit(customer_id=c.id, credits=234, feature="chat")
    page = login("admin").get("/").get_data(as_text=True)
    assert "1,266" in page  # outstanding = 1,500 - 234
    assert "1,500" in page and "234" in page


def test_customer_search_and_ledger(login, make):
    c = make.customer(email="grace@example.com", name="Grace Hopper", credits=40)
    make.customer(email="alan@example.com", name="Alan Turing")
    staff = login("support")
    results = staff.htmx("/customers/?q=grace").get_data(as_text=True)
    assert "Grace Hopper" in results and "Alan Turing" not in results and "<html" not in results
    ledger.debit(customer_id=c.id, credits=15, feature="image")
    detail = staff.get(f"/customers/{c.id}").get_data(as_text=True)
    assert "Grace Hopper" in detail and "image" in detail and "25" in detail


def test_unknown_customer_is_404(login):
    assert login("support").get("/customers/999999").status_code == 404


def test_make_run_serves_on_the_port_it_prints():
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(["make", "-n", "run", "PORT=5077"], cwd=root, capture_output=True,
                         text=True, check=True).stdout
    assert "http://127.0.0.1:5077" in out and "--port 5077" in out and "5000" not in out
