using System;

namespace Virtio.Ring.Transport;

/// <summary>An <see cref="IInterruptLine"/> made of two callbacks, for VMMs that drive their interrupt controller directly.</summary>
public sealed class InterruptLine : IInterruptLine
{
    private readonly Action _raise;
    private readonly Action? _lower;

    /// <summary>Calls <paramref name="raise"/> to assert and <paramref name="lower"/> (if any) to deassert.</summary>
    public InterruptLine(Action raise, Action? lower = null)
    {
        ArgumentNullException.ThrowIfNull(raise);
        _raise = raise;
        _lower = lower;
    }

    /// <inheritdoc/>
    public void Raise() => _raise();

    /// <inheritdoc/>
    public void Lower() => _lower?.Invoke();
}
