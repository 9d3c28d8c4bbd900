# The "API: Jobs" page of the reference documentation, as written there, changed only in the
# database URL (and `send_email_ref`, which the page uses without showing: the glossary's
# task_ref). The module is `users`, as the page's by-name example assumes.
import os
from datetime import timedelta

from soniq import Soniq, daily, every, task_ref

app = Soniq(database_url=os.environ["SONIQ_TEST_DATABASE_URL"])


@app.job()
async def send_email(to: str, subject: str, body: str): ...


@app.job(retries=5, queue="urgent")
async def send_password_reset(to: str, token: str): ...


@app.job(
    retries=5,
    priority=10,
    queue="urgent",
    retry_delay=[1, 5, 30, 60],
    timeout=120,
)
async def process_payment(order_id: int, amount: float): ...


@app.job()
async def send_report(user_id: int): ...


@app.job()
async def fulfill_order(order_id: int): ...


@app.periodic(cron=daily().at("09:00"), name="reports.daily")
async def daily_report(): ...


@app.periodic(cron=every(10).minutes(), queue="maintenance", name="cleanup")
async def cleanup_old_sessions(): ...


@app.periodic(every=timedelta(seconds=30), name="metrics.flush")
async def flush_metrics(): ...


@app.job()
async def cleanup(region: str): ...


send_email_ref = task_ref("users.send_email")


from soniq import JobContext  # noqa: E402


@app.job()
async def process_order(order_id: int, ctx: JobContext):
    print(f"Job {ctx.job_id}, attempt {ctx.attempt} of {ctx.max_attempts}")
