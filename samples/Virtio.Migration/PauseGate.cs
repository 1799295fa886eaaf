using System;
using System.Threading;

namespace Virtio.Migration;

/// <summary>
/// Where a guest thread can be stopped, as a vCPU is stopped between instructions: the thread calls
/// <see cref="Checkpoint"/> between operations; <see cref="Pause"/> returns once it is parked there.
/// </summary>
public sealed class PauseGate : IDisposable
{
    private readonly ManualResetEventSlim _running = new(true);
    private readonly ManualResetEventSlim _parked = new(false);
    private volatile bool _pauseRequested;

    /// <summary>Called by the guest thread between operations: parks while a pause is requested.</summary>
    public void Checkpoint()
    {
        if (!_pauseRequested)
        {
            return;
        }

        _parked.Set();
        _running.Wait();
        _parked.Reset();
    }

    /// <summary>Requests a pause and waits (bounded) until the thread is parked.</summary>
    public void Pause(TimeSpan timeout)
    {
        _running.Reset();
        _pauseRequested = true;
        if (!_parked.Wait(timeout))
        {
            throw new TimeoutException("A guest thread did not reach its pause point.");
        }
    }

    /// <summary>Lets the thread run again.</summary>
    public void Resume()
    {
        _pauseRequested = false;
        _running.Set();
    }

    /// <summary>Releases the events.</summary>
    public void Dispose()
    {
        _running.Dispose();
        _parked.Dispose();
    }
}
