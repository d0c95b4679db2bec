"""An HTTP streams app whose one function streams forever, for the emulator's functionTimeout cut."""

import asyncio

import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, StreamingResponse

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="ticks", methods=[func.HttpMethod.GET])
async def ticks(req: Request) -> StreamingResponse:
    async def forever():
        n = 0
        while True:
            yield f"data: {n}\n\n".encode()
            n += 1
            await asyncio.sleep(0.2)

    return StreamingResponse(forever(), media_type="text/event-stream")
